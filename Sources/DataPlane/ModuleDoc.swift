/// # DataPlane
///
/// Bulk transfers agent to agent, never through the coordinator: `TransferSender` and
/// `TransferReceiver` are pure machines (credit flow control, order and length checks, CRC-32C per
/// chunk, timeouts); `DataPlane` is their shell (a ROUTER peer socket, a DEALER per peer, CURVE,
/// the emulated link both ways). Used by features through their handlers; one thread drives it.
