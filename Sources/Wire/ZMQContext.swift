import CZeroMQ

/// A libzmq context. Thread-safe: sockets for many threads may be created from one context.
///
/// `terminate()` blocks until every socket of the context is closed; sockets blocked in a call
/// return `ETERM` so their owners can close them. Calling it more than once is harmless.
public final class ZMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer
    private var terminated = false

    public init(ioThreads: Int32 = 1) {
        guard let handle = zmq_ctx_new() else { fatalError("zmq_ctx_new: out of memory") }
        self.handle = handle
        zmq_ctx_set(handle, ZMQ_IO_THREADS, ioThreads)
        // Sockets are file descriptors; allow many for scale tests.
        zmq_ctx_set(handle, ZMQ_MAX_SOCKETS, 16384)
    }

    public func terminate() {
        if terminated { return }
        terminated = true
        while zmq_ctx_term(handle) != 0 && zmq_errno() == EINTR {}
    }

    deinit { terminate() }

    /// The linked libzmq version, e.g. "4.3.4".
    public static var libraryVersion: String {
        var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
        zmq_version(&major, &minor, &patch)
        return "\(major).\(minor).\(patch)"
    }

    /// Whether this libzmq was built with CURVE security.
    public static var hasCurve: Bool { zmq_has("curve") != 0 }
}
