/// # Wire
///
/// Owns the ZeroMQ sockets (`ZMQContext`, `ZMQSocket`, `ZMQPoller`), CURVE keys and the ZAP
/// authenticator, and the control-plane framing (`EnvelopeCodec`: one frame, one `Envelope`,
/// version and size checked before parsing). Everything above it talks to peers through here.
/// A socket belongs to one thread at a time; the codec is pure.
