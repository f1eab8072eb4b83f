import CZeroMQ
import Foundation

/// A ZeroMQ Authentication Protocol (RFC 27) handler that admits CURVE clients whose public key
/// is in an allow-list, and refuses everyone else. An admitted connection's user id is its public
/// key (Z85), so every message it sends carries the key as its `User-Id` property
/// (`ZMQSocket.receiveWithUserID`). The allow-list can be replaced while it runs (a reload of
/// `authorized_keys`); it applies to handshakes from then on.
///
/// **Ownership:** it runs its own thread with its own REP socket bound to
/// `inproc://zeromq.zap.01` of the given context; that socket never leaves the thread. Start it
/// before the CURVE server socket binds, so no handshake goes unauthenticated.
public final class ZAPAuthenticator: @unchecked Sendable {
    private let context: ZMQContext
    private var allowed: Set<String>
    private let lock = NSLock()
    private var _accepted: UInt64 = 0
    private var _rejected: UInt64 = 0
    private var stopping = false
    private var thread: Thread?
    private let ready = DispatchSemaphore(value: 0)
    private var startError: Error?
    private let onReject: (@Sendable (String, String) -> Void)?

    /// - Parameter allowedPublicKeys: Z85 public keys of the clients to admit.
    /// - Parameter onReject: called on the handler thread with the refused key and peer address.
    public init(context: ZMQContext, allowedPublicKeys: Set<String>,
                onReject: (@Sendable (String, String) -> Void)? = nil) {
        self.context = context
        self.allowed = allowedPublicKeys
        self.onReject = onReject
    }

    /// Replaces the allow-list (new handshakes only; the coordinator refuses messages from keys no
    /// longer listed on connections already open).
    public func update(allowedPublicKeys: Set<String>) { lock.lock(); allowed = allowedPublicKeys; lock.unlock() }
    private var currentAllowed: Set<String> { lock.lock(); defer { lock.unlock() }; return allowed }

    public var acceptedCount: UInt64 { lock.lock(); defer { lock.unlock() }; return _accepted }
    public var rejectedCount: UInt64 { lock.lock(); defer { lock.unlock() }; return _rejected }

    public func start() throws {
        let t = Thread { [self] in self.run() }
        t.name = "zap-handler"
        thread = t
        t.start()
        ready.wait()
        if let e = startError { throw e }
    }

    /// Asks the handler thread to stop; it exits within its poll interval.
    public func stop() {
        lock.lock(); stopping = true; lock.unlock()
    }

    private var isStopping: Bool { lock.lock(); defer { lock.unlock() }; return stopping }

    private func run() {
        let socket: ZMQSocket
        do {
            socket = try ZMQSocket(context, .rep)
            try socket.bind("inproc://zeromq.zap.01")
        } catch {
            startError = error
            ready.signal()
            return
        }
        ready.signal()
        defer { socket.close() }
        while !isStopping {
            do {
                guard try ZMQPoller.readable([socket], timeoutMs: 100)[0],
                      let request = try socket.receive(dontWait: true) else { continue }
                try socket.send(reply(to: request))
            } catch let e as ZMQError where e.isContextTerminated {
                return
            } catch {
                continue
            }
        }
    }

    /// RFC 27 request: version, request id, domain, address, identity, mechanism, credentials…
    func reply(to request: [[UInt8]]) -> [[UInt8]] {
        let requestID = request.count > 1 ? request[1] : []
        func answer(_ code: String, _ text: String, userID: String = "") -> [[UInt8]] {
            [Array("1.0".utf8), requestID, Array(code.utf8), Array(text.utf8), Array(userID.utf8), []]
        }
        guard request.count >= 7, String(decoding: request[0], as: UTF8.self) == "1.0" else {
            return answer("500", "malformed ZAP request")
        }
        let address = String(decoding: request[3], as: UTF8.self)
        let mechanism = String(decoding: request[5], as: UTF8.self)
        guard mechanism == "CURVE", let key = CurveKeyPair.encodeZ85(request[6]) else {
            bump(accepted: false)
            return answer("400", "only CURVE clients are admitted")
        }
        if currentAllowed.contains(key) {
            bump(accepted: true)
            return answer("200", "OK", userID: key)
        }
        bump(accepted: false)
        onReject?(key, address)
        return answer("400", "public key not authorised")
    }

    private func bump(accepted: Bool) {
        lock.lock()
        if accepted { _accepted += 1 } else { _rejected += 1 }
        lock.unlock()
    }
}
