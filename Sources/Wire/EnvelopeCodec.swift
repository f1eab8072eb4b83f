import Protocol
import SwiftProtobuf

/// Why a frame could not be accepted as an `Envelope`. Each case maps to a wire `ErrorCode` and a
/// counter name, so a receiver can answer and count without crashing.
public enum EnvelopeDecodeError: Error, Equatable, CustomStringConvertible {
    case frameTooLarge(size: Int, limit: Int)
    case malformed(String)
    case unsupportedVersion(UInt32)
    case missingBody(messageID: UInt64)

    public var code: ErrorCode {
        switch self {
        case .frameTooLarge: return .frameTooLarge
        case .malformed: return .malformed
        case .unsupportedVersion: return .unsupportedVersion
        case .missingBody: return .unknownBody
        }
    }

    public var counterName: String {
        switch self {
        case .frameTooLarge: return "rejected_frame_too_large"
        case .malformed: return "rejected_malformed"
        case .unsupportedVersion: return "rejected_unsupported_version"
        case .missingBody: return "rejected_unknown_body"
        }
    }

    public var description: String {
        switch self {
        case let .frameTooLarge(size, limit): return "frame of \(size) bytes is over the limit of \(limit) bytes"
        case let .malformed(reason): return "malformed envelope: \(reason)"
        case let .unsupportedVersion(v):
            return "protocol version \(v) is not supported (this build speaks \(currentProtocolVersion))"
        case let .missingBody(id):
            return "envelope \(id) has no body this build understands (unknown or missing oneof field)"
        }
    }
}

/// The fields every envelope carries besides its body (envelope.proto fields 1–7).
public struct EnvelopeHeader: Sendable, Equatable {
    public var protocolVersion: UInt32
    public var messageID: UInt64
    public var sender: String
    public var sentAtUnixNanos: Int64
    public var trace: TraceContext?
    public var recipient: String
    public var inReplyTo: UInt64

    public init(protocolVersion: UInt32 = currentProtocolVersion, messageID: UInt64, sender: String, sentAtUnixNanos: Int64,
                trace: TraceContext? = nil, recipient: String = "", inReplyTo: UInt64 = 0) {
        self.protocolVersion = protocolVersion
        self.messageID = messageID
        self.sender = sender
        self.sentAtUnixNanos = sentAtUnixNanos
        self.trace = trace
        self.recipient = recipient
        self.inReplyTo = inReplyTo
    }

    public init(_ e: Envelope) {
        self.init(protocolVersion: e.protocolVersion, messageID: e.messageID, sender: e.sender, sentAtUnixNanos: e.sentAtUnixNanos,
                  trace: e.hasTrace ? e.trace : nil, recipient: e.recipient, inReplyTo: e.inReplyTo)
    }
}

/// The two bodies that make up most of the control plane's traffic (an agent's heartbeats and
/// the coordinator's acks), which a receiver can take without an `Envelope` around them.
public enum HotBody: Sendable, Equatable {
    case heartbeat(Heartbeat)
    case heartbeatAck(HeartbeatAck)
}

/// A heartbeat as received: its envelope's header and its body. A class, so the decoded frame
/// moves from the socket to its handler as one reference (a `Heartbeat` is a large value, and
/// each copy of it moves and retains every field).
///
/// Its telemetry stays as the bytes received (checked as the decoder would check them): the
/// coordinator keeps each node's latest telemetry that way and decodes it only when its status is
/// read, so a heartbeat's GPU entries are not built thousands of times a second for nothing.
public final class HeartbeatFrame: Sendable {
    public let header: EnvelopeHeader
    /// The heartbeat with its telemetry left out (`hasTelemetry` false): see `telemetry`.
    public let withoutTelemetry: Heartbeat
    /// Its telemetry, when it has one.
    public let telemetry: TelemetryBytes?
    init(_ header: EnvelopeHeader, _ heartbeat: Heartbeat, telemetry: TelemetryBytes?) {
        self.header = header; self.withoutTelemetry = heartbeat; self.telemetry = telemetry
    }
    /// The whole heartbeat, telemetry decoded (for code off the hot path).
    public var heartbeat: Heartbeat {
        var hb = withoutTelemetry
        if let t = telemetry { hb.telemetry = t.decoded() }
        return hb
    }
}

/// A `Telemetry` message as received: its bytes, already checked to be one the hand-written
/// decoder reads entirely, so `decoded()` cannot fail. A node's usual telemetry (up to 120 bytes:
/// eight GPUs) is held in the value itself, so keeping it costs no allocation per heartbeat.
public struct TelemetryBytes: Sendable, Equatable {
    static let inlineCapacity = 120
    private typealias Inline = (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                                UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)
    private var inline: Inline = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    private var inlineCount = 0
    /// The bytes when longer than `inlineCapacity`.
    private var spilled: [UInt8]?

    /// Bytes the hot-path decoder checked.
    init(checked p: UnsafeRawBufferPointer) {
        if p.count <= Self.inlineCapacity {
            inlineCount = p.count
            if let from = p.baseAddress, p.count > 0 {
                withUnsafeMutableBytes(of: &inline) { $0.baseAddress!.copyMemory(from: from, byteCount: p.count) }
            }
        } else {
            spilled = Array(p)
        }
    }

    /// A telemetry message's bytes (as SwiftProtobuf writes them).
    public init(_ t: Telemetry) {
        let b: [UInt8] = (try? t.serializedBytes()) ?? []
        self = b.withUnsafeBytes { TelemetryBytes(checked: $0) }
    }

    /// The bytes, lent for the call.
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        if let spilled { return try spilled.withUnsafeBytes(body) }
        return try withUnsafeBytes(of: inline) { try body(UnsafeRawBufferPointer(rebasing: $0[0..<inlineCount])) }
    }

    public var bytes: [UInt8] { withBytes { Array($0) } }

    public func decoded() -> Telemetry {
        withBytes { raw in
            let p = raw.assumingMemoryBound(to: UInt8.self)
            var r = HotPathCodec.Reader(p, 0, p.count)
            var t = Telemetry()
            // Checked at receive time; SwiftProtobuf as the fallback would read the same bytes.
            if HotPathCodec.scanTelemetry(&r, into: &t) { return t }
            return (try? Telemetry(serializedBytes: Array(raw))) ?? Telemetry()
        }
    }

    public static func == (a: TelemetryBytes, b: TelemetryBytes) -> Bool {
        a.withBytes { x in b.withBytes { y in x.elementsEqual(y) } }
    }
}

/// A heartbeat ack as received (as `HeartbeatFrame`).
public final class HeartbeatAckFrame: Sendable {
    public let header: EnvelopeHeader
    public let ack: HeartbeatAck
    init(_ header: EnvelopeHeader, _ ack: HeartbeatAck) { self.header = header; self.ack = ack }
}

/// One decoded frame: a heartbeat or its ack as header and body, or any envelope.
public enum DecodedFrame: Sendable {
    case heartbeat(HeartbeatFrame)
    case heartbeatAck(HeartbeatAckFrame)
    case envelope(Envelope)

    /// The frame's header.
    public var header: EnvelopeHeader {
        switch self {
        case .heartbeat(let f): return f.header
        case .heartbeatAck(let f): return f.header
        case .envelope(let e): return EnvelopeHeader(e)
        }
    }

    /// The frame as an envelope (built for the hot bodies: for code off the hot path).
    public var envelope: Envelope {
        switch self {
        case .envelope(let e): return e
        case .heartbeat(let f): return Envelope(f.header, .heartbeat(f.heartbeat))
        case .heartbeatAck(let f): return Envelope(f.header, .heartbeatAck(f.ack))
        }
    }
}

extension Envelope {
    /// The envelope of `header` and a hot body.
    public init(_ h: EnvelopeHeader, _ body: HotBody) {
        self.init()
        header = h
        switch body {
        case .heartbeat(let hb): heartbeat = hb
        case .heartbeatAck(let ack): heartbeatAck = ack
        }
    }
}

/// Encodes and decodes control-plane frames. Pure: no sockets, no clocks.
public struct EnvelopeCodec: Sendable {
    /// Frames larger than this are rejected before parsing.
    public var maxFrameBytes: Int

    public static let defaultMaxFrameBytes = 1 << 20

    public init(maxFrameBytes: Int = EnvelopeCodec.defaultMaxFrameBytes) {
        self.maxFrameBytes = maxFrameBytes
    }

    public func encode(_ envelope: Envelope) -> [UInt8] {
        // Heartbeats and their acks by hand (the same bytes, several times faster); the rest by
        // SwiftProtobuf. Serializing a message with only known fields cannot fail.
        if let fast = HotPathCodec.encode(envelope) { return fast }
        return (try? envelope.serializedBytes()) ?? []
    }

    /// A heartbeat or ack envelope from its header and body: the same bytes as `encode(Envelope(header, body))`.
    public func encode(_ header: EnvelopeHeader, _ body: HotBody) -> [UInt8] {
        if let fast = HotPathCodec.encode(header, body) { return fast }
        return (try? Envelope(header, body).serializedBytes()) ?? []
    }

    /// As `encode(_:_:)`, lending the bytes to `use` (no array is made of them).
    /// Not generic: a generic function called from another module runs unspecialized, looking up
    /// type metadata on every call (which showed in the profile of this hot path).
    public func withEncoded(_ header: EnvelopeHeader, _ body: HotBody, _ use: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        if try HotPathCodec.withEncoded(header, body, use) { return }
        try encode(header, body).withUnsafeBytes(use)
    }

    /// Decodes a frame in place (a buffer lent by the socket), with `decode`'s checks and errors;
    /// heartbeats and acks come back as header and body, without an `Envelope` built around them.
    public func decodeFrame(_ frame: UnsafeRawBufferPointer) throws -> DecodedFrame {
        if frame.count > maxFrameBytes {
            throw EnvelopeDecodeError.frameTooLarge(size: frame.count, limit: maxFrameBytes)
        }
        if let hot = HotPathCodec.decodeFrame(frame.assumingMemoryBound(to: UInt8.self)) {
            // The version straight from the frame's header (`hot.header` would copy the header).
            let version: UInt32
            switch hot {
            case .heartbeat(let f): version = f.header.protocolVersion
            case .heartbeatAck(let f): version = f.header.protocolVersion
            case .envelope(let e): version = e.protocolVersion
            }
            if version != currentProtocolVersion { throw EnvelopeDecodeError.unsupportedVersion(version) }
            return hot
        }
        return .envelope(try decodeWithSwiftProtobuf([UInt8](frame)))
    }

    /// Decodes a frame, checking size, wire format, version and body, in that order.
    public func decode(_ frame: [UInt8]) throws -> Envelope {
        if frame.count > maxFrameBytes {
            throw EnvelopeDecodeError.frameTooLarge(size: frame.count, limit: maxFrameBytes)
        }
        if let fast = HotPathCodec.decode(frame) {
            // The fast path returns only envelopes with a body; reading `body` back to check would
            // copy the whole oneof.
            if fast.protocolVersion != currentProtocolVersion {
                throw EnvelopeDecodeError.unsupportedVersion(fast.protocolVersion)
            }
            return fast
        }
        return try decodeWithSwiftProtobuf(frame)
    }

    /// A frame the hand-written path does not take (any other body, anything unexpected).
    private func decodeWithSwiftProtobuf(_ frame: [UInt8]) throws -> Envelope {
        let envelope: Envelope
        do {
            var options = BinaryDecodingOptions()
            options.messageDepthLimit = 32
            envelope = try Envelope(serializedBytes: frame, options: options)
        } catch {
            throw EnvelopeDecodeError.malformed("\(error)")
        }
        if envelope.protocolVersion != currentProtocolVersion {
            throw EnvelopeDecodeError.unsupportedVersion(envelope.protocolVersion)
        }
        if envelope.body == nil {
            throw EnvelopeDecodeError.missingBody(messageID: envelope.messageID)
        }
        return envelope
    }

    /// Best effort: the message id of a frame that failed to decode, to name it in the error reply.
    public func messageIDIfReadable(_ frame: [UInt8]) -> UInt64 {
        guard frame.count <= maxFrameBytes, let e = try? Envelope(serializedBytes: frame) else { return 0 }
        return e.messageID
    }
}

extension Envelope {
    /// A current-version envelope with the given header fields and body.
    public static func make(
        sender: String, messageID: UInt64, sentAtNanos: Int64, recipient: String = "",
        inReplyTo: UInt64 = 0, body: Envelope.OneOf_Body
    ) -> Envelope {
        var e = Envelope()
        e.header = EnvelopeHeader(messageID: messageID, sender: sender, sentAtUnixNanos: sentAtNanos, recipient: recipient, inReplyTo: inReplyTo)
        e.body = body
        return e
    }

    /// The header fields (1–7), read or written together.
    public var header: EnvelopeHeader {
        get { EnvelopeHeader(self) }
        set {
            protocolVersion = newValue.protocolVersion
            messageID = newValue.messageID
            sender = newValue.sender
            sentAtUnixNanos = newValue.sentAtUnixNanos
            if let t = newValue.trace { trace = t } else { clearTrace() }
            recipient = newValue.recipient
            inReplyTo = newValue.inReplyTo
        }
    }

    /// A short name for the body, for logs and counters.
    public var bodyName: String {
        switch body {
        case .register: return "register"
        case .registerAck: return "register_ack"
        case .heartbeat: return "heartbeat"
        case .heartbeatAck: return "heartbeat_ack"
        case .command: return "command"
        case .commandAck: return "command_ack"
        case .error: return "error"
        case .deregister: return "deregister"
        case .statusRequest: return "status_request"
        case .statusReply: return "status_reply"
        case .operatorCommand: return "operator_command"
        case .operatorCommandReply: return "operator_command_reply"
        case .submitJobs: return "submit_jobs"
        case .submitJobsReply: return "submit_jobs_reply"
        case .jobsRequest: return "jobs_request"
        case .jobsReply: return "jobs_reply"
        case .traceBatch: return "trace_batch"
        case .traceBatchAck: return "trace_batch_ack"
        case .submitRequests: return "submit_requests"
        case .submitRequestsReply: return "submit_requests_reply"
        case .requestsRequest: return "requests_request"
        case .requestsReply: return "requests_reply"
        case .featureRequest(let f): return "feature_request/" + f.feature
        case .featureReply(let f): return "feature_reply/" + f.feature
        case nil: return "none"
        }
    }
}
