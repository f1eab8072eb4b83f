import Foundation
import Protocol
import Wire

/// A short-lived client for operator tools (`strato status`, `strato node …`): sends one request to
/// the coordinator and waits for the matching reply.
///
/// **Ownership:** one thread; create, use and close it where you are.
public final class OperatorClient {
    public enum ClientError: Error, CustomStringConvertible {
        case timeout(endpoint: String, ms: Int)
        case rejected(ErrorReply)
        case unexpected(String)

        public var description: String {
            switch self {
            case let .timeout(endpoint, ms):
                return "no answer from the coordinator at \(endpoint) within \(ms) ms (is it running? with CURVE, pass --keys)"
            case let .rejected(e): return "coordinator refused: \(e.message) [\(e.code)]"
            case let .unexpected(what): return "unexpected answer from the coordinator: \(what)"
            }
        }
    }

    private let context = ZMQContext()
    private let socket: ZMQSocket
    private let codec = EnvelopeCodec(maxFrameBytes: 64 << 20)
    public let endpoint: String
    public let keysDirectory: String?
    private let name: String
    private var nextID: UInt64 = 0

    /// - Parameter keyFile: a key pair file to connect with instead of KEYS/operator.key (a driver's
    ///   `driver.key`, or any other; the coordinator checks its role).
    public init(endpoint: String, keysDirectory: String? = nil, keyFile: String? = nil, name: String = "operator/\(getpid())") throws {
        self.endpoint = endpoint
        self.keysDirectory = keysDirectory
        self.name = name
        socket = try ZMQSocket(context, .dealer)
        if let dir = keysDirectory {
            let keys = KeyDirectory(path: dir)
            let pair = try keyFile.map(KeyDirectory.readPair) ?? keys.operatorKeys()
            try socket.makeCurveClient(pair, serverPublicKey: try keys.coordinatorPublicKey())
        }
        try socket.connect(endpoint)
    }

    deinit { close() }

    public func close() {
        socket.close()
        context.terminate()
    }

    /// Sends `body` and returns the reply's body; throws on timeout or an error reply.
    public func request(_ body: Envelope.OneOf_Body, timeoutMs: Int = 3000) throws -> Envelope.OneOf_Body {
        nextID += 1
        let id = nextID
        let e = Envelope.make(sender: name, messageID: id, sentAtNanos: SystemClock.shared.wallNanos(), body: body)
        try socket.send([codec.encode(e)])
        let deadline = SystemClock.shared.monotonicNanos() + Int64(timeoutMs) * 1_000_000
        while true {
            let left = (deadline - SystemClock.shared.monotonicNanos()) / 1_000_000
            if left <= 0 { throw ClientError.timeout(endpoint: endpoint, ms: timeoutMs) }
            guard try ZMQPoller.readable([socket], timeoutMs: Int(left))[0],
                  let frames = try socket.receive(dontWait: true), frames.count == 1 else { continue }
            let reply = try codec.decode(frames[0])
            guard reply.inReplyTo == id else { continue }   // a late answer to an earlier request
            if case .error(let err)? = reply.body { throw ClientError.rejected(err) }
            guard let b = reply.body else { throw ClientError.unexpected("empty body") }
            return b
        }
    }

    public func status(timeoutMs: Int = 3000) throws -> StatusReply {
        var req = StatusRequest()
        req.includeCapabilities = true
        guard case .statusReply(let s) = try request(.statusRequest(req), timeoutMs: timeoutMs) else {
            throw ClientError.unexpected("not a status reply")
        }
        return s
    }

    public func command(node: String, _ command: Command, timeoutMs: Int = 3000) throws -> OperatorCommandReply {
        var oc = OperatorCommand()
        oc.nodeID = node
        oc.command = command
        guard case .operatorCommandReply(let r) = try request(.operatorCommand(oc), timeoutMs: timeoutMs) else {
            throw ClientError.unexpected("not a command reply")
        }
        return r
    }

    /// Sends raw bytes as one frame and returns the first reply frame decoded (for bad-input tests).
    public func sendRaw(_ frames: [[UInt8]], timeoutMs: Int = 2000) throws -> Envelope? {
        // Discard answers to earlier fire-and-forget frames before sending, so a fast answer to
        // this one is never thrown away with them.
        if timeoutMs > 0 { while try socket.receive(dontWait: true) != nil {} }
        try socket.send(frames)
        guard timeoutMs > 0, try ZMQPoller.readable([socket], timeoutMs: timeoutMs)[0], let reply = try socket.receive(dontWait: true),
              let first = reply.first else { return nil }
        return try? codec.decode(first)
    }
}

extension OperatorClient {
    public func submit(_ jobs: [JobSubmission], services: [ServiceSubmission] = [], timeoutMs: Int = 5000) throws -> SubmitJobsReply {
        var s = SubmitJobs()
        s.jobs = jobs
        s.services = services
        guard case .submitJobsReply(let r) = try request(.submitJobs(s), timeoutMs: timeoutMs) else { throw ClientError.unexpected("not a submit reply") }
        return r
    }

    public func jobs(timeoutMs: Int = 5000) throws -> JobsReply {
        guard case .jobsReply(let r) = try request(.jobsRequest(JobsRequest()), timeoutMs: timeoutMs) else { throw ClientError.unexpected("not a jobs reply") }
        return r
    }

    public func submit(requests: [InferenceRequest], timeoutMs: Int = 5000) throws -> SubmitRequestsReply {
        var s = SubmitRequests()
        s.requests = requests
        guard case .submitRequestsReply(let r) = try request(.submitRequests(s), timeoutMs: timeoutMs) else { throw ClientError.unexpected("not a submit-requests reply") }
        return r
    }

    public func requests(includeRequests: Bool = false, timeoutMs: Int = 5000) throws -> RequestsReply {
        var q = RequestsRequest()
        q.includeRequests = includeRequests
        guard case .requestsReply(let r) = try request(.requestsRequest(q), timeoutMs: timeoutMs) else { throw ClientError.unexpected("not a requests reply") }
        return r
    }
}
