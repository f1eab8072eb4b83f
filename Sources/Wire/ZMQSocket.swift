import CZeroMQ

/// Socket types Stratolab uses.
public enum ZMQSocketType {
    case router, dealer, rep, req, pair, pub, sub, push, pull

    var raw: Int32 {
        switch self {
        case .router: return ZMQ_ROUTER
        case .dealer: return ZMQ_DEALER
        case .rep: return ZMQ_REP
        case .req: return ZMQ_REQ
        case .pair: return ZMQ_PAIR
        case .pub: return ZMQ_PUB
        case .sub: return ZMQ_SUB
        case .push: return ZMQ_PUSH
        case .pull: return ZMQ_PULL
        }
    }
}

/// A ZeroMQ socket.
///
/// **Ownership:** libzmq sockets are not thread-safe. A `ZMQSocket` belongs to the thread that
/// uses it: create it, use it and close it on one thread at a time (handing it over between threads
/// is fine only with a happens-before edge, e.g. before the thread starts).
///
/// Calls retry on `EINTR`. Non-blocking calls report `EAGAIN` as `nil`/`false` rather than an error.
/// A terminated context surfaces as a `ZMQError` whose `isContextTerminated` is true.
public final class ZMQSocket {
    public let type: ZMQSocketType
    let handle: UnsafeMutableRawPointer
    private var closed = false
    /// Messages and frame views a lending receive reuses (no allocation per message on the
    /// control plane's hot path); a nested lending receive on the same socket makes its own.
    private static let scratchMessages = 4
    private let scratch = UnsafeMutablePointer<zmq_msg_t>.allocate(capacity: ZMQSocket.scratchMessages)
    private var scratchFrames: [UnsafeRawBufferPointer] = []
    private var scratchInUse = false

    public init(_ context: ZMQContext, _ type: ZMQSocketType) throws {
        guard let handle = zmq_socket(context.handle, type.raw) else { throw ZMQError.last("zmq_socket") }
        self.handle = handle
        self.type = type
        // Never let an unsent message block process exit for long.
        try setOption(ZMQ_LINGER, Int32(0))
    }

    deinit {
        close()
        scratch.deallocate()
    }

    /// Closes the socket, discarding unsent messages after `linger` milliseconds.
    public func close(linger: Int32 = 0) {
        if closed { return }
        closed = true
        var value = linger
        zmq_setsockopt(handle, ZMQ_LINGER, &value, MemoryLayout<Int32>.size)
        zmq_close(handle)
    }

    // MARK: Options

    public func setOption(_ option: Int32, _ value: Int32) throws {
        var v = value
        try check(zmq_setsockopt(handle, option, &v, MemoryLayout<Int32>.size), "zmq_setsockopt(\(option))")
    }

    public func setOption(_ option: Int32, _ value: Int64) throws {
        var v = value
        try check(zmq_setsockopt(handle, option, &v, MemoryLayout<Int64>.size), "zmq_setsockopt(\(option))")
    }

    public func setOption(_ option: Int32, bytes: [UInt8]) throws {
        let rc = bytes.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) }
        try check(rc, "zmq_setsockopt(\(option))")
    }

    public func setOption(_ option: Int32, string: String) throws {
        try setOption(option, bytes: Array(string.utf8))
    }

    public func intOption(_ option: Int32) throws -> Int32 {
        var v: Int32 = 0
        var size = MemoryLayout<Int32>.size
        try check(zmq_getsockopt(handle, option, &v, &size), "zmq_getsockopt(\(option))")
        return v
    }

    /// The endpoint last bound, with the real port when bound to port 0 ("tcp://127.0.0.1:*").
    public func lastEndpoint() throws -> String {
        var buffer = [CChar](repeating: 0, count: 512)
        var size = buffer.count
        try check(zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size), "zmq_getsockopt(LAST_ENDPOINT)")
        return String(cString: buffer)
    }

    /// Sets this socket's routing identity (as seen by a ROUTER peer). Call before connect.
    public func setRoutingID(_ id: [UInt8]) throws { try setOption(ZMQ_ROUTING_ID, bytes: id) }

    public func setHighWaterMarks(send: Int32, receive: Int32) throws {
        try setOption(ZMQ_SNDHWM, send)
        try setOption(ZMQ_RCVHWM, receive)
    }

    // MARK: Connections

    public func bind(_ endpoint: String) throws {
        try check(zmq_bind(handle, endpoint), "zmq_bind(\(endpoint))")
    }

    public func connect(_ endpoint: String) throws {
        try check(zmq_connect(handle, endpoint), "zmq_connect(\(endpoint))")
    }

    public func disconnect(_ endpoint: String) throws {
        try check(zmq_disconnect(handle, endpoint), "zmq_disconnect(\(endpoint))")
    }

    // MARK: Messages

    /// Sends one multipart message. Returns false if `dontWait` and the message would block
    /// (high-water mark reached, or a ROUTER with no such peer when mandatory routing is on).
    @discardableResult
    public func send(_ frames: [[UInt8]], dontWait: Bool = false) throws -> Bool {
        precondition(!frames.isEmpty, "a message has at least one frame")
        for (index, frame) in frames.enumerated() {
            var flags: Int32 = dontWait ? ZMQ_DONTWAIT : 0
            if index < frames.count - 1 { flags |= ZMQ_SNDMORE }
            while true {
                let rc = frame.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) }
                if rc >= 0 { break }
                let err = zmq_errno()
                if err == EINTR { continue }
                // Only the first frame can be refused atomically; later frames never block.
                if err == EAGAIN && index == 0 { return false }
                if err == EHOSTUNREACH && index == 0 { return false }
                throw ZMQError(code: err, operation: "zmq_send")
            }
        }
        return true
    }

    /// Sends the frame `head` (copied, as `send(buffers:)` does) and then `tail` without copying it: libzmq's
    /// I/O thread writes it straight from its memory, which `owner` keeps alive until libzmq lets
    /// go of it (then released on that thread). The bytes must not change meanwhile: an owner such
    /// as a boxed Swift array guarantees it (a writer to a shared array copies it first).
    /// Same results as `send(buffers:dontWait:)`.
    @discardableResult
    public func send(head: [UInt8], lending tail: UnsafeRawBufferPointer, owner: AnyObject, dontWait: Bool = false) throws -> Bool {
        let flags: Int32 = dontWait ? ZMQ_DONTWAIT : 0
        while true {
            let rc = head.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags | ZMQ_SNDMORE) }
            if rc >= 0 { break }
            let err = zmq_errno()
            if err == EINTR { continue }
            if err == EAGAIN || err == EHOSTUNREACH { return false }
            throw ZMQError(code: err, operation: "zmq_send")
        }
        var msg = zmq_msg_t()
        let hint = Unmanaged.passRetained(owner).toOpaque()
        // libzmq calls this once it is done with the bytes (sent, or the message closed unsent).
        let release: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Void = { _, hint in
            if let hint { Unmanaged<AnyObject>.fromOpaque(hint).release() }
        }
        guard zmq_msg_init_data(&msg, UnsafeMutableRawPointer(mutating: tail.baseAddress), tail.count, release, hint) == 0 else {
            Unmanaged<AnyObject>.fromOpaque(hint).release()
            throw ZMQError(code: zmq_errno(), operation: "zmq_msg_init_data")
        }
        while true {
            // The later frames of a message never block once its first is taken.
            if zmq_msg_send(&msg, handle, 0) >= 0 { return true }
            let err = zmq_errno()
            if err == EINTR { continue }
            zmq_msg_close(&msg)
            throw ZMQError(code: err, operation: "zmq_msg_send")
        }
    }

    /// Sends one multipart message straight from the callers' buffers (libzmq copies them once into
    /// its own message; no Swift array is built). Same results as `send(_:dontWait:)`.
    @discardableResult
    public func send(buffers: [UnsafeRawBufferPointer], dontWait: Bool = false) throws -> Bool {
        precondition(!buffers.isEmpty, "a message has at least one frame")
        for (index, frame) in buffers.enumerated() {
            var flags: Int32 = dontWait ? ZMQ_DONTWAIT : 0
            if index < buffers.count - 1 { flags |= ZMQ_SNDMORE }
            while true {
                let rc = zmq_send(handle, frame.baseAddress, frame.count, flags)
                if rc >= 0 { break }
                let err = zmq_errno()
                if err == EINTR { continue }
                if (err == EAGAIN || err == EHOSTUNREACH) && index == 0 { return false }
                throw ZMQError(code: err, operation: "zmq_send")
            }
        }
        return true
    }

    /// Receives one multipart message and lends its frames to `body` without copying them out of
    /// libzmq's buffers (valid only during the call). Returns nil if `dontWait` and nothing is queued.
    @inlinable
    public func receive<T>(dontWait: Bool = false, _ body: ([UnsafeRawBufferPointer]) throws -> T) throws -> T? {
        var result: T?
        _ = try receiveLending(dontWait: dontWait, userID: false) { frames, _ in result = try body(frames) }
        return result
    }

    /// As `receive(dontWait:_:)`, with the `User-Id` the sending connection was admitted with (a
    /// CURVE client's Z85 public key under Stratolab's ZAP handler; nil without one).
    @inlinable
    public func receiveWithUserID<T>(dontWait: Bool = false, _ body: ([UnsafeRawBufferPointer], String?) throws -> T) throws -> T? {
        var result: T?
        _ = try receiveLending(dontWait: dontWait, userID: true) { frames, userID in result = try body(frames, userID) }
        return result
    }

    /// The lending receive itself, not generic (the generic entry points above are specialized
    /// where they are called; a generic function called across modules looks up type metadata
    /// on every call). False when `dontWait` and nothing is queued.
    @usableFromInline
    func receiveLending(dontWait: Bool, userID wantUserID: Bool, _ body: ([UnsafeRawBufferPointer], String?) throws -> Void) throws -> Bool {
        if scratchInUse { return try receiveLendingAllocating(dontWait: dontWait, userID: wantUserID, body) }
        scratchInUse = true
        // The first frames go into the scratch messages; a longer message's further frames into
        // messages of their own.
        var used = 0
        var extra: [UnsafeMutablePointer<zmq_msg_t>] = []
        func message(_ k: Int) -> UnsafeMutablePointer<zmq_msg_t> { k < ZMQSocket.scratchMessages ? scratch + k : extra[k - ZMQSocket.scratchMessages] }
        var frames = scratchFrames
        scratchFrames = []
        frames.removeAll(keepingCapacity: true)
        defer {
            for k in 0..<used { zmq_msg_close(message(k)) }
            for m in extra { m.deallocate() }
            frames.removeAll(keepingCapacity: true)
            scratchFrames = frames
            scratchInUse = false
        }
        while true {
            if used >= ZMQSocket.scratchMessages && extra.count == used - ZMQSocket.scratchMessages { extra.append(.allocate(capacity: 1)) }
            let msg = message(used)
            zmq_msg_init(msg)
            let flags: Int32 = (dontWait && used == 0) ? ZMQ_DONTWAIT : 0
            let rc = zmq_msg_recv(msg, handle, flags)
            if rc < 0 {
                zmq_msg_close(msg)
                let err = zmq_errno()
                if err == EINTR { continue }
                if err == EAGAIN && used == 0 { return false }
                throw ZMQError(code: err, operation: "zmq_msg_recv")
            }
            used += 1
            if zmq_msg_more(msg) == 0 { break }
        }
        for k in 0..<used { frames.append(UnsafeRawBufferPointer(start: zmq_msg_data(message(k)), count: zmq_msg_size(message(k)))) }
        // A ROUTER's identity frame carries no metadata: take the first frame that does.
        var userID: String?
        if wantUserID {
            for k in 0..<used {
                if let p = zmq_msg_gets(message(k), "User-Id") { let s = String(cString: p); if !s.isEmpty { userID = s; break } }
            }
        }
        try body(frames, userID)
        return true
    }

    private func receiveLendingAllocating(dontWait: Bool, userID wantUserID: Bool, _ body: ([UnsafeRawBufferPointer], String?) throws -> Void) throws -> Bool {
        var messages: [UnsafeMutablePointer<zmq_msg_t>] = []
        defer { for m in messages { zmq_msg_close(m); m.deallocate() } }
        while true {
            let msg = UnsafeMutablePointer<zmq_msg_t>.allocate(capacity: 1)
            zmq_msg_init(msg)
            let flags: Int32 = (dontWait && messages.isEmpty) ? ZMQ_DONTWAIT : 0
            let rc = zmq_msg_recv(msg, handle, flags)
            if rc < 0 {
                zmq_msg_close(msg); msg.deallocate()
                let err = zmq_errno()
                if err == EINTR { continue }
                if err == EAGAIN && messages.isEmpty { return false }
                throw ZMQError(code: err, operation: "zmq_msg_recv")
            }
            messages.append(msg)
            if zmq_msg_more(msg) == 0 { break }
        }
        let frames = messages.map { UnsafeRawBufferPointer(start: zmq_msg_data($0), count: zmq_msg_size($0)) }
        // A ROUTER's identity frame carries no metadata: take the first frame that does.
        var userID: String?
        if wantUserID {
            for m in messages {
                if let p = zmq_msg_gets(m, "User-Id") { let s = String(cString: p); if !s.isEmpty { userID = s; break } }
            }
        }
        try body(frames, userID)
        return true
    }

    /// Receives one multipart message with the `User-Id` its connection was admitted with (a CURVE
    /// server's ZAP handler sets it: the client's public key), or nil on a connection without one.
    public func receiveWithUserID(dontWait: Bool = false) throws -> (frames: [[UInt8]], userID: String?)? {
        var frames: [[UInt8]] = []
        var userID: String?
        var msg = zmq_msg_t()
        zmq_msg_init(&msg)
        defer { zmq_msg_close(&msg) }
        while true {
            let flags: Int32 = (dontWait && frames.isEmpty) ? ZMQ_DONTWAIT : 0
            let rc = zmq_msg_recv(&msg, handle, flags)
            if rc < 0 {
                let err = zmq_errno()
                if err == EINTR { continue }
                if err == EAGAIN && frames.isEmpty { return nil }
                throw ZMQError(code: err, operation: "zmq_msg_recv")
            }
            // Read from any frame: a ROUTER's routing-id frame is made locally, the rest came over the connection.
            if userID == nil, let p = zmq_msg_gets(&msg, "User-Id") {
                let s = String(cString: p)
                userID = s.isEmpty ? nil : s
            }
            let size = zmq_msg_size(&msg)
            frames.append(size == 0 ? [] : Array(UnsafeRawBufferPointer(start: zmq_msg_data(&msg), count: size)))
            if zmq_msg_more(&msg) == 0 { break }
        }
        return (frames, userID)
    }

    /// Receives one multipart message. Returns nil if `dontWait` and nothing is queued, or when a
    /// receive timeout (`ZMQ_RCVTIMEO`) expires.
    public func receive(dontWait: Bool = false) throws -> [[UInt8]]? {
        var frames: [[UInt8]] = []
        var msg = zmq_msg_t()
        zmq_msg_init(&msg)
        defer { zmq_msg_close(&msg) }
        while true {
            let flags: Int32 = (dontWait && frames.isEmpty) ? ZMQ_DONTWAIT : 0
            let rc = zmq_msg_recv(&msg, handle, flags)
            if rc < 0 {
                let err = zmq_errno()
                if err == EINTR { continue }
                if err == EAGAIN && frames.isEmpty { return nil }
                throw ZMQError(code: err, operation: "zmq_msg_recv")
            }
            let size = zmq_msg_size(&msg)
            if size == 0 {
                frames.append([])
            } else {
                let data = zmq_msg_data(&msg)!
                frames.append(Array(UnsafeRawBufferPointer(start: data, count: size)))
            }
            if zmq_msg_more(&msg) == 0 { return frames }
        }
    }

    private func check(_ rc: Int32, _ operation: @autoclosure () -> String) throws {
        if rc != 0 { throw ZMQError.last(operation()) }
    }
}

/// Waits on several sockets at once.
public enum ZMQPoller {
    /// Returns, for each socket in order, whether it has a message to read. Retries on EINTR
    /// (with the full timeout again, which is fine for the short timeouts Stratolab uses).
    public static func readable(_ sockets: [ZMQSocket], timeoutMs: Int) throws -> [Bool] {
        var items = sockets.map { zmq_pollitem_t(socket: $0.handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0) }
        while true {
            let rc = zmq_poll(&items, Int32(items.count), timeoutMs)
            if rc >= 0 { break }
            let err = zmq_errno()
            if err == EINTR { continue }
            throw ZMQError(code: err, operation: "zmq_poll")
        }
        return items.map { ($0.revents & Int16(ZMQ_POLLIN)) != 0 }
    }
}

// Option numbers for modules that do not import CZeroMQ themselves.
public let ZMQ_IMMEDIATE_OPTION: Int32 = ZMQ_IMMEDIATE
public let ZMQ_RECONNECT_IVL_MAX_OPTION: Int32 = ZMQ_RECONNECT_IVL_MAX
public let ZMQ_RECONNECT_IVL_OPTION: Int32 = ZMQ_RECONNECT_IVL
public let ZMQ_ROUTER_MANDATORY_OPTION: Int32 = ZMQ_ROUTER_MANDATORY
public let ZMQ_RCVTIMEO_OPTION: Int32 = ZMQ_RCVTIMEO
