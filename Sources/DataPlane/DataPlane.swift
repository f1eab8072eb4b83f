import Cluster
import Foundation
import Logging
import Protocol
import SwiftProtobuf
import Wire

/// Where a peer's data plane listens, as it registered (`Register.data_endpoint`/`data_public_key`).
public struct PeerAddress: Hashable, Sendable {
    public var endpoint: String
    /// Z85 CURVE public key of the peer's socket; nil when keys are off.
    public var publicKey: String?
    public init(endpoint: String, publicKey: String? = nil) { self.endpoint = endpoint; self.publicKey = publicKey }
}

/// Settings of one node's data plane.
public struct DataPlaneConfig: Sendable {
    public var nodeID: String
    /// Where the peer socket binds; port 0 picks a free one (the advertised endpoint says which).
    public var bindEndpoint = "tcp://127.0.0.1:0"
    /// Host to advertise instead of the bound address (e.g. the container's service name when
    /// bound on 0.0.0.0).
    public var advertiseHost: String?
    /// This node's CURVE key pair (server identity of its socket, client identity towards peers)
    /// and the public keys it admits; nil: no CURVE.
    public var keys: CurveKeyPair?
    public var authorizedKeys: Set<String> = []
    /// The authorised agent keys with the node ids each may speak for (`authorized_keys`' pins):
    /// a frame naming a sender its connection's key may not claim is refused, as the coordinator
    /// refuses a heartbeat for another node. Empty: any admitted key may name any sender.
    public var peerKeys: [String: AuthorizedKey] = [:]
    /// The `authorized_keys` file to read again when it changes (checked each second): keys
    /// added or removed there are admitted or refused without a restart.
    public var authorizedKeysFile: String?
    public var chunkBytes = 1 << 20
    /// Chunks a receiver lets a sender have in flight: the memory bound per transfer on both ends.
    public var window = 8
    public var maxChunkBytes = 16 << 20
    public var maxTransferBytes = 1 << 40
    /// A transfer whose peer is silent this long fails with `peerUnreachable`.
    public var peerTimeoutNanos: Int64 = 2_000_000_000
    /// Emulated conditions of this node's link, each direction (what its data plane sends, and
    /// what it receives): latency, jitter, bandwidth and partitions as on the control plane, so a
    /// transfer crosses the sender's and the receiver's links. Loss is not applied: the data plane
    /// is a reliable stream, where loss shows as retransmission delay.
    public var network = NetworkConditions.none
    /// The node's network control file (as the control plane's): while it exists its conditions
    /// replace `network`, so a fault that partitions or slows the node does so on both planes.
    public var networkControlFile: String?

    public init(nodeID: String) { self.nodeID = nodeID }
}

/// What a feature does with transfers sent to this node. Called on the data plane's thread.
public protocol DataPlaneReceiver: AnyObject {
    /// Take this transfer? Return the reason to refuse it (e.g. no room), or nil to accept.
    func shouldAccept(from sender: String, transfer: UInt64, offer: TransferOffer) -> String?
    /// A verified chunk: `bytes` are valid only during the call (copy what you keep). Throwing
    /// rejects the contents: the transfer fails on both sides with the error's description.
    func consume(from sender: String, transfer: UInt64, offset: Int, bytes: UnsafeRawBufferPointer) throws
    func finished(from sender: String, transfer: UInt64, result: Result<Int, DataPlaneError>)
}

/// What a feature does with stream messages (frames, inputs, updates) sent to this node. Called
/// on the data plane's thread; `header` and `payload` are valid only during the call.
public protocol DataPlaneStreamReceiver: AnyObject {
    func streamMessage(from sender: String, kind: String, header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer)
}

/// Bytes to send, read chunk by chunk when flow control allows (never all at once).
public typealias TransferSource = (_ offset: Int, _ length: Int, _ emit: (UnsafeRawBufferPointer) throws -> Void) throws -> Void

/// A chunk a source hands over for sending without a copy: `bytes[range]`. The socket keeps the
/// array alive until it has sent it; nobody can change it meanwhile (a writer copies a shared array).
public struct SharedChunk {
    public let bytes: [UInt8]
    public let range: Range<Int>
    public init(_ bytes: [UInt8], _ range: Range<Int>) { self.bytes = bytes; self.range = range }
}
/// A source that can hand over a chunk as a `SharedChunk` (nil: not this one; the transfer's
/// `TransferSource` gives it instead).
public typealias SharedTransferSource = (_ offset: Int, _ length: Int) throws -> SharedChunk?

/// Keeps a shared chunk's array alive while libzmq sends from it.
private final class ChunkOwner { let bytes: [UInt8]; init(_ b: [UInt8]) { bytes = b } }

/// One node's data plane: a ROUTER peer socket that receives transfers, a DEALER per peer it
/// sends to, the pure `TransferSender`/`TransferReceiver` machines, and the emulated uplink.
///
/// **Ownership:** every method must be called from one thread (the one that polls `sockets` and
/// calls `pump`); the host shell, a benchmark or a test drives it. Bulk bytes never pass through
/// the coordinator. Malformed or unexpected frames are counted and answered, never fatal.
public final class DataPlane {
    public struct Stats: Sendable {
        public var transfersSent = 0, transfersReceived = 0, transfersFailed = 0
        public var chunksSent: UInt64 = 0, chunksReceived: UInt64 = 0
        public var bytesSent: UInt64 = 0, bytesReceived: UInt64 = 0
        public var framesRejected: UInt64 = 0
        /// Frames refused because the connection's key may not speak for the sender they name.
        public var senderRefused: UInt64 = 0
        /// Times `authorized_keys` was read again after it changed.
        public var keysReloaded = 0
        /// Stream messages (fire and forget): sent, delivered to a feature, dropped (bad checksum
        /// or length, or no feature takes the kind).
        public var streamSent: UInt64 = 0, streamReceived: UInt64 = 0, streamDropped: UInt64 = 0
        public var streamBytesSent: UInt64 = 0, streamBytesReceived: UInt64 = 0
        /// Most chunks of one incoming transfer read in one pump: bounded by the window.
        public var maxChunksQueued = 0
    }

    public let config: DataPlaneConfig
    public private(set) var endpoint = ""
    public var publicKey: String? { config.keys?.publicKey }
    public private(set) var stats = Stats()
    /// Who takes incoming transfers, by the offer's `kind` ("kv", "block", "probe", ...); `receiver`
    /// takes every kind not listed. Features register theirs; receivers are held weakly.
    public weak var receiver: DataPlaneReceiver?
    private var receiversByKind: [String: WeakReceiver] = [:]
    private struct WeakReceiver { weak var value: DataPlaneReceiver? }
    public func register(_ r: DataPlaneReceiver, forKind kind: String) { receiversByKind[kind] = WeakReceiver(value: r) }
    private func receiver(for kind: String) -> DataPlaneReceiver? { receiversByKind[kind]?.value ?? receiver }
    private struct WeakStreamReceiver { weak var value: DataPlaneStreamReceiver? }
    private var streamReceivers: [String: WeakStreamReceiver] = [:]
    /// Takes stream messages of `kind` (held weakly).
    public func registerStream(_ r: DataPlaneStreamReceiver, forKind kind: String) { streamReceivers[kind] = WeakStreamReceiver(value: r) }
    private var streamSequence: UInt64 = 0

    private let clock: Clock
    private let logger: Logger
    private let context = ZMQContext()
    private var zap: ZAPAuthenticator?
    private let router: ZMQSocket
    private var peers: [PeerAddress: ZMQSocket] = [:]
    private struct Outgoing {
        var sender: TransferSender
        let source: TransferSource
        let shared: SharedTransferSource?
        let done: (Result<Int, DataPlaneError>) -> Void
        let socket: ZMQSocket
    }
    private var outgoing: [UInt64: Outgoing] = [:]
    private struct Incoming { var machine: TransferReceiver; let identity: [UInt8]; weak var receiver: DataPlaneReceiver? }
    private struct IncomingKey: Hashable { let sender: String; let id: UInt64 }
    private var incoming: [IncomingKey: Incoming] = [:]
    private var nextTransferID: UInt64 = 0
    /// The emulated uplink: frames wait here until due (nil payload socket = the router).
    private enum Target { case router([UInt8]), peer(ZMQSocket) }
    private var link: LinkEmulator<(Target, [[UInt8]])>
    /// The emulated downlink: what arrives waits here until due (the node's conditions apply to
    /// both directions, as on the control plane).
    private enum Source { case router(userID: String?), peer(PeerAddress) }
    private var inLink: LinkEmulator<(from: Source, frames: [[UInt8]])>
    private var lastTick: Int64 = 0
    /// nil: no pins enforced (no keys configured).
    private var peerKeys: [String: AuthorizedKey]?
    private var keysStamp: FileStamp?
    private var lastKeysCheck: Int64 = 0
    private var control: NetworkControlFile
    public private(set) var conditions: NetworkConditions
    private var chunkHeader = [UInt8]()

    public init(config: DataPlaneConfig, clock: Clock = SystemClock.shared, logger: Logger = Logger(label: "strato.dataplane")) throws {
        self.config = config
        self.clock = clock
        self.logger = logger
        _ = AllocatorTuning.applied
        peerKeys = config.peerKeys.isEmpty && config.authorizedKeysFile == nil ? nil : config.peerKeys
        keysStamp = config.authorizedKeysFile.flatMap { FileStamp(path: $0) }
        control = NetworkControlFile(path: config.networkControlFile, configured: config.network)
        self.conditions = config.network
        let conditions = DataPlane.streamConditions(config.network)
        link = LinkEmulator(conditions: conditions, seed: UInt64(truncatingIfNeeded: config.nodeID.hashValue))
        inLink = LinkEmulator(conditions: conditions, seed: UInt64(truncatingIfNeeded: config.nodeID.hashValue) ^ 0x5A5A_A5A5)
        router = try ZMQSocket(context, .router)
        try router.setHighWaterMarks(send: 10_000, receive: 10_000)
        try router.setOption(ZMQ_ROUTER_MANDATORY_OPTION, Int32(1))
        if let keys = config.keys {
            let auth = ZAPAuthenticator(context: context, allowedPublicKeys: config.authorizedKeys) { [logger] key, peer in
                logger.warning("data plane refused a peer with an unknown CURVE key", metadata: ["key": "\(key)", "peer": "\(peer)"])
            }
            try auth.start()
            zap = auth
            try router.makeCurveServer(keys)
        }
        try router.bind(config.bindEndpoint)
        let bound = try router.lastEndpoint()
        endpoint = DataPlane.advertised(bound, host: config.advertiseHost)
    }

    deinit { close() }

    private var closed = false
    public func close() {
        if closed { return }
        closed = true
        for s in peers.values { s.close() }
        router.close()
        zap?.stop()
        context.terminate()
    }

    /// Sockets the host's loop polls for reading before it calls `pump`.
    public var sockets: [ZMQSocket] { [router] + Array(peers.values) }

    /// CURVE clients refused by this node's socket (unknown keys).
    public var refusedPeers: UInt64 { zap?.rejectedCount ?? 0 }

    public var transfersInProgress: Int { outgoing.count + incoming.count }

    /// When `pump` next has timed work (an emulated frame due, a timeout to check).
    public var nextDueNanos: Int64? {
        var due = [link.nextDue, inLink.nextDue].compactMap { $0 }.min()
        if transfersInProgress > 0 { due = min(due ?? .max, lastTick + 50_000_000) }
        return due
    }

    // MARK: Sending

    /// Starts sending `totalBytes` from `source` to `peer`; `done` is called (on this thread) with
    /// the byte count once the receiver has verified and consumed everything, or the error.
    @discardableResult
    public func send(to peer: PeerAddress, kind: String, meta: [String: String] = [:], totalBytes: Int,
                     chunkBytes: Int? = nil, source: @escaping TransferSource, shared: SharedTransferSource? = nil,
                     done: @escaping (Result<Int, DataPlaneError>) -> Void) throws -> UInt64 {
        let socket = try connection(to: peer)
        nextTransferID += 1
        let id = nextTransferID
        let now = clock.monotonicNanos()
        var machine = TransferSender(id: id, totalBytes: totalBytes, chunkBytes: chunkBytes ?? config.chunkBytes, kind: kind,
                                     meta: meta, peerEndpoint: peer.endpoint, timeoutNanos: config.peerTimeoutNanos, now: now)
        let first = machine.start(now: now)
        outgoing[id] = Outgoing(sender: machine, source: source, shared: shared, done: done, socket: socket)
        stats.transfersSent += 1
        carryOut(first, transfer: id)
        return id
    }

    /// Sends one stream message to `peer`: no offer, credit or completion, nothing re-sent (see
    /// `StreamMessage` in dataplane.proto). Throws only when the peer cannot be connected to.
    public func post(to peer: PeerAddress, kind: String, header: [UInt8], payload: [UInt8] = []) throws {
        let socket = try connection(to: peer)
        streamSequence += 1
        var m = StreamMessage()
        m.kind = kind
        m.header = Data(header)
        m.payloadLength = UInt32(payload.count)
        if !payload.isEmpty { m.payloadCrc32C = payload.withUnsafeBytes { CRC32C.checksum($0) } }
        let head = frameBytes(.stream(m), transfer: streamSequence)
        stats.streamSent += 1
        stats.streamBytesSent += UInt64(head.count + payload.count)
        send(.peer(socket), payload.isEmpty ? [head] : [head, payload])
    }

    /// Gives up on an outgoing transfer; the receiver is told.
    public func cancel(_ id: UInt64, reason: String) {
        guard var o = outgoing[id] else { return }
        let d = o.sender.cancel(reason)
        outgoing[id] = o
        carryOut(d, transfer: id)
    }

    private func connection(to peer: PeerAddress) throws -> ZMQSocket {
        if let s = peers[peer] { return s }
        let s = try ZMQSocket(context, .dealer)
        try s.setHighWaterMarks(send: 10_000, receive: 10_000)
        // Not ZMQ_IMMEDIATE: an offer made before the connection is up waits in the socket rather
        // than being dropped (and re-sent 200 ms later); a dead peer is caught by the timeout.
        try s.setOption(ZMQ_RECONNECT_IVL_OPTION, Int32(100))
        try s.setOption(ZMQ_RECONNECT_IVL_MAX_OPTION, Int32(1000))
        if let keys = config.keys {
            guard let server = peer.publicKey, CurveKeyPair.isValidZ85Key(server) else {
                throw DataPlaneError.malformed("peer \(peer.endpoint) has no valid CURVE public key, and keys are on")
            }
            try s.makeCurveClient(keys, serverPublicKey: server)
        }
        try s.connect(peer.endpoint)
        peers[peer] = s
        return s
    }

    // MARK: The loop

    /// Reads everything readable, runs the machines, sends what the emulated link releases, and
    /// checks timeouts. Call it whenever one of `sockets` is readable or `nextDueNanos` has come.
    public func pump() throws {
        var queuedThisPump: [IncomingKey: Int] = [:]
        // With conditions in force, what arrives waits on the emulated downlink (copied out of
        // libzmq's buffers); without, it is handled in place.
        let emulatedIn = !conditions.isNone || !inLink.isEmpty
        for _ in 0..<4096 {
            let got = try router.receiveWithUserID(dontWait: true) { frames, userID -> Bool in
                if emulatedIn { offerInbound(.router(userID: userID), frames) } else { handleAtReceiver(frames, userID: userID, queued: &queuedThisPump) }
                return true
            }
            if got == nil { break }
        }
        for (peer, socket) in peers {
            for _ in 0..<4096 {
                let got = try socket.receive(dontWait: true) { frames -> Bool in
                    if emulatedIn { offerInbound(.peer(peer), frames) } else { handleAtSender(frames, from: peer) }
                    return true
                }
                if got == nil { break }
            }
        }
        let now = clock.monotonicNanos()
        if let (c, source) = control.poll(now: now, current: conditions, logger: logger) {
            logger.notice("data-plane network conditions changed", metadata: ["from": "\(conditions)", "to": "\(c)", "source": "\(source)"])
            conditions = c
            link.setConditions(DataPlane.streamConditions(c))
            inLink.setConditions(DataPlane.streamConditions(c))
        }
        // A partition holds what is in flight (a TCP stream stalls; it does not lose bytes): past
        // the peer timeout the transfers fail, before it they go on once the partition heals.
        if !conditions.partitioned { inLink.releaseDue(at: now) { item in
            withBuffers(item.frames) { frames in
                switch item.from {
                case .router(let userID): handleAtReceiver(frames, userID: userID, queued: &queuedThisPump)
                case .peer(let peer): handleAtSender(frames, from: peer)
                }
            }
        } }
        for q in queuedThisPump.values { stats.maxChunksQueued = max(stats.maxChunksQueued, q) }
        releaseLink(now: now)
        if now - lastKeysCheck >= 1_000_000_000 {
            lastKeysCheck = now
            reloadKeysIfChanged()
        }
        if now - lastTick >= 50_000_000 {
            lastTick = now
            for id in Array(outgoing.keys) {
                guard var o = outgoing[id] else { continue }
                let d = o.sender.tick(now: now)
                outgoing[id] = o
                carryOut(d, transfer: id)
            }
            for key in Array(incoming.keys) {
                guard var i = incoming[key] else { continue }
                let d = i.machine.tick(now: now, peer: key.sender)
                incoming[key] = i
                carryOut(d, key: key)
            }
        }
    }

    /// Polls and pumps until `done()` is true or `timeoutNanos` pass (tests, benchmarks, tools).
    public func run(until done: () -> Bool, timeoutNanos: Int64 = 60_000_000_000) throws {
        let deadline = clock.monotonicNanos() + timeoutNanos
        while !done() && clock.monotonicNanos() < deadline {
            let now = clock.monotonicNanos()
            let wait = nextDueNanos.map { max(0, min(20, Int(($0 - now) / 1_000_000))) } ?? 20
            _ = try ZMQPoller.readable(sockets, timeoutMs: wait)
            try pump()
        }
    }

    // MARK: Receiver side

    private func handleAtReceiver(_ frames: [UnsafeRawBufferPointer], userID: String?, queued: inout [IncomingKey: Int]) {
        guard frames.count == 2 || frames.count == 3 else { stats.framesRejected += 1; return }

        let identity = Array(frames[0])
        let frame: DataFrame
        do { frame = try DataFrame(serializedBytes: Array(frames[1])) } catch {
            reject(identity, id: 0, .malformed("not a DataFrame: \(error)"))
            return
        }
        if let why = DataPlane.senderRefusal(sender: frame.sender, userID: userID, peerKeys: peerKeys) {
            stats.senderRefused += 1
            if stats.senderRefused <= 10 || stats.senderRefused % 1000 == 0 {
                logger.warning("data plane refused a frame: \(why)", metadata: ["refused": "\(stats.senderRefused)"])
            }
            if case .stream? = frame.body { stats.streamDropped += 1; return }   // fire and forget: nothing to answer
            reject(identity, id: frame.transferID, .refused(why))
            return
        }
        if case .stream(let m)? = frame.body {
            receiveStream(m, from: frame.sender, version: frame.protocolVersion, payload: frames.count == 3 ? frames[2] : nil)
            return
        }
        guard frame.protocolVersion == dataPlaneProtocolVersion else {
            reject(identity, id: frame.transferID, .unsupportedVersion(frame.protocolVersion))
            return
        }
        let key = IncomingKey(sender: frame.sender, id: frame.transferID)
        let now = clock.monotonicNanos()
        switch frame.body {
        case .offer(let offer)?:
            if incoming[key] != nil {   // the sender re-sent its offer before hearing our accept
                sendAccept(to: identity, id: frame.transferID)
                return
            }
            if let problem = TransferReceiver.problem(with: offer, maxChunkBytes: config.maxChunkBytes, maxTotalBytes: config.maxTransferBytes) {
                reject(identity, id: frame.transferID, .malformed(problem))
                return
            }
            guard let receiver = receiver(for: offer.kind) else {
                reject(identity, id: frame.transferID, .refused("no feature on this node takes '\(offer.kind)' transfers"))
                return
            }
            if let why = receiver.shouldAccept(from: frame.sender, transfer: frame.transferID, offer: offer) {
                reject(identity, id: frame.transferID, .refused(why))
                return
            }
            var machine = TransferReceiver(sender: frame.sender, id: frame.transferID, offer: offer, window: config.window,
                                           timeoutNanos: config.peerTimeoutNanos, now: now)
            stats.transfersReceived += 1
            let d = machine.accepted(now: now)
            incoming[key] = Incoming(machine: machine, identity: identity, receiver: receiver)
            sendAccept(to: identity, id: frame.transferID)
            carryOut(d, key: key)
        case .chunk(let h)?:
            guard frames.count == 3 else { reject(identity, id: frame.transferID, .malformed("a chunk needs a payload frame")); return }
            guard var entry = incoming[key] else { reject(identity, id: frame.transferID, .unknownTransfer(frame.transferID)); return }
            let payload = frames[2]
            queued[key, default: 0] += 1
            stats.chunksReceived += 1
            stats.bytesReceived += UInt64(payload.count)
            let crc = CRC32C.checksum(payload)
            let d = entry.machine.chunk(h, payloadLength: payload.count, payloadCRC: crc, now: now)
            incoming[key] = entry
            carryOut(d, key: key, payload: payload)
        case .error(let e)?:
            guard var entry = incoming[key] else { return }
            let d = entry.machine.peerError(e)
            incoming[key] = entry
            carryOut(d, key: key)
        default:
            reject(identity, id: frame.transferID, .malformed("a receiver does not take '\(frame.body.map { "\($0)" } ?? "nothing")'"))
        }
    }

    /// A stream message: checked (version, length, checksum) and handed to its feature; dropped
    /// and counted otherwise (no reply: the sender does not wait for one).
    private func receiveStream(_ m: StreamMessage, from sender: String, version: UInt32, payload: UnsafeRawBufferPointer?) {
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        let p = payload ?? empty
        guard version == dataPlaneProtocolVersion, p.count == Int(m.payloadLength),
              p.isEmpty || CRC32C.checksum(p) == m.payloadCrc32C,
              let r = streamReceivers[m.kind]?.value else {
            stats.streamDropped += 1
            return
        }
        stats.streamReceived += 1
        stats.streamBytesReceived += UInt64(p.count)
        m.header.withUnsafeBytes { h in r.streamMessage(from: sender, kind: m.kind, header: h, payload: p) }
    }

    private func carryOut(_ directives: [TransferReceiver.Directive], key: IncomingKey, payload: UnsafeRawBufferPointer? = nil) {
        guard let entry = incoming[key] else { return }
        for d in directives {
            switch d {
            case let .deliver(index, offset):
                guard let p = payload else { continue }
                do { try entry.receiver?.consume(from: key.sender, transfer: key.id, offset: offset, bytes: p) } catch {
                    // What follows the delivery (credit, completion) no longer applies.
                    guard var e = incoming[key] else { return }
                    let f = e.machine.rejected("\(error)", index: index)
                    incoming[key] = e
                    carryOut(f, key: key)
                    return
                }
            case let .sendCredit(credits, consumed):
                var c = TransferCredit(); c.credits = UInt32(credits); c.consumed = consumed
                transmit(.router(entry.identity), body: .credit(c), transfer: key.id)
            case .sendComplete(let bytes):
                var c = TransferComplete(); c.bytes = UInt64(bytes)
                transmit(.router(entry.identity), body: .complete(c), transfer: key.id)
            case .sendError(let e):
                transmit(.router(entry.identity), body: .error(e), transfer: key.id)
            case .completed(let bytes):
                incoming[key] = nil
                entry.receiver?.finished(from: key.sender, transfer: key.id, result: .success(bytes))
            case .failed(let e):
                incoming[key] = nil
                stats.transfersFailed += 1
                logger.warning("incoming transfer failed", metadata: ["from": "\(key.sender)", "transfer": "\(key.id)", "error": "\(e)"])
                entry.receiver?.finished(from: key.sender, transfer: key.id, result: .failure(e))
            }
        }
    }

    /// Why a frame naming `sender` may not come from a connection admitted with `userID`, or nil
    /// when it may. Pure. Without keys configured (nil) any sender is let through; a shared agent
    /// key (no pins) may name any sender, as on the control plane.
    public static func senderRefusal(sender: String, userID: String?, peerKeys: [String: AuthorizedKey]?) -> String? {
        guard let peerKeys else { return nil }
        guard let key = userID, let entry = peerKeys[key] else {
            return "the connection's key is not an authorised agent key (sender '\(sender)')"
        }
        guard entry.mayClaim(sender) else {
            return "key \(key.prefix(8))… may not speak for node '\(sender)' (it is pinned to \(entry.nodes.joined(separator: ",")))"
        }
        return nil
    }

    /// Reads `authorized_keys` again when it changed: new agent keys are admitted at their next
    /// handshake, removed ones refused frame by frame from now on. A file that does not parse
    /// leaves the keys as they were.
    private func reloadKeysIfChanged() {
        guard let path = config.authorizedKeysFile else { return }
        let stamp = FileStamp(path: path)
        guard stamp != keysStamp else { return }
        keysStamp = stamp
        do {
            let entries = try KeyDirectory.parseAuthorized(try KeyDirectory.read(path), file: path).filter { $0.value.role == .agent }
            peerKeys = entries
            zap?.update(allowedPublicKeys: Set(entries.keys))
            stats.keysReloaded += 1
            logger.notice("data plane: authorized_keys reloaded", metadata: ["agent_keys": "\(entries.count)"])
        } catch {
            logger.error("data plane: authorized_keys changed but cannot be read; keeping the keys loaded before: \(error)")
        }
    }

    private func sendAccept(to identity: [UInt8], id: UInt64) {
        var a = TransferAccept(); a.credits = UInt32(config.window)
        transmit(.router(identity), body: .accept(a), transfer: id)
    }

    private func reject(_ identity: [UInt8], id: UInt64, _ e: DataPlaneError) {
        stats.framesRejected += 1
        var te = TransferError(); te.code = e.code; te.message = e.wireMessage
        transmit(.router(identity), body: .error(te), transfer: id)
    }

    // MARK: Sender side

    private func handleAtSender(_ frames: [UnsafeRawBufferPointer], from peer: PeerAddress) {
        guard frames.count == 1, let frame = try? DataFrame(serializedBytes: Array(frames[0])) else {
            stats.framesRejected += 1
            return
        }
        guard var o = outgoing[frame.transferID] else { return }   // finished already
        let d = o.sender.received(frame, now: clock.monotonicNanos())
        outgoing[frame.transferID] = o
        carryOut(d, transfer: frame.transferID)
    }

    private func carryOut(_ directives: [TransferSender.Directive], transfer id: UInt64) {
        for d in directives {
            guard let o = outgoing[id] else { return }
            switch d {
            case .sendOffer(let offer):
                transmit(.peer(o.socket), body: .offer(offer), transfer: id)
            case let .sendChunk(index, offset, length):
                do {
                    if let shared = try o.shared?(offset, length) {
                        precondition(shared.range.count == length && shared.range.upperBound <= shared.bytes.count,
                                     "a transfer source shared \(shared.range) of \(shared.bytes.count) bytes for a \(length)-byte chunk")
                        sendSharedChunk(o.socket, shared, index: index, offset: offset, transfer: id)
                        stats.chunksSent += 1
                        stats.bytesSent += UInt64(length)
                        continue
                    }
                    try o.source(offset, length) { bytes in
                        precondition(bytes.count == length, "a transfer source gave \(bytes.count) bytes for a \(length)-byte chunk")
                        sendChunk(o.socket, header: chunkFrame(index: index, offset: offset, bytes, transfer: id), payload: bytes)
                    }
                    stats.chunksSent += 1
                    stats.bytesSent += UInt64(length)
                } catch {
                    var m = outgoing[id]!
                    let f = m.sender.cancel("the source could not read bytes \(offset)..<\(offset + length): \(error)")
                    outgoing[id] = m
                    carryOut(f, transfer: id)
                    return
                }
            case .completed(let bytes):
                outgoing[id] = nil
                o.done(.success(bytes))
            case .failed(let e):
                if let te = o.sender.errorForPeer { transmit(.peer(o.socket), body: .error(te), transfer: id) }
                outgoing[id] = nil
                stats.transfersFailed += 1
                o.done(.failure(e))
            }
        }
    }

    // MARK: Frames out (through the emulated uplink)

    private func frameBytes(_ body: DataFrame.OneOf_Body, transfer: UInt64) -> [UInt8] {
        var f = DataFrame()
        f.protocolVersion = dataPlaneProtocolVersion
        f.sender = config.nodeID
        f.transferID = transfer
        f.body = body
        return (try? f.serializedBytes()) ?? []
    }

    private func transmit(_ target: Target, body: DataFrame.OneOf_Body, transfer: UInt64) {
        send(target, [frameBytes(body, transfer: transfer)])
    }

    private func sendChunk(_ socket: ZMQSocket, header: [UInt8], payload: UnsafeRawBufferPointer) {
        if conditions.isNone && link.isEmpty {
            header.withUnsafeBytes { h in deliverNow(.peer(socket), buffers: [h, payload]) }
        } else {
            send(.peer(socket), [header, Array(payload)])
        }
    }

    /// The frame that goes before a chunk's bytes: where they belong and their CRC-32C.
    private func chunkFrame(index: UInt64, offset: Int, _ bytes: UnsafeRawBufferPointer, transfer id: UInt64) -> [UInt8] {
        var h = ChunkHeader()
        h.index = index; h.offset = UInt64(offset); h.length = UInt32(bytes.count); h.crc32C = CRC32C.checksum(bytes)
        return frameBytes(.chunk(h), transfer: id)
    }

    /// A chunk sent from the array it lives in: no copy into libzmq's message when nothing is
    /// emulated on the uplink (the emulated link holds frames of its own).
    private func sendSharedChunk(_ socket: ZMQSocket, _ c: SharedChunk, index: UInt64, offset: Int, transfer id: UInt64) {
        c.bytes.withUnsafeBytes { all in
            let bytes = UnsafeRawBufferPointer(rebasing: all[c.range])
            let header = chunkFrame(index: index, offset: offset, bytes, transfer: id)
            if conditions.isNone && link.isEmpty {
                // The array's storage outlives this closure: the owner holds it until libzmq is done.
                _ = try? socket.send(head: header, lending: bytes, owner: ChunkOwner(c.bytes), dontWait: true)
            } else {
                send(.peer(socket), [header, Array(bytes)])
            }
        }
    }

    private func send(_ target: Target, _ frames: [[UInt8]]) {
        if conditions.isNone && link.isEmpty {
            withBuffers(frames) { deliverNow(target, buffers: $0) }
            return
        }
        let now = clock.monotonicNanos()
        link.offer((target, frames), bytes: frames.reduce(0) { $0 + $1.count }, at: now)
        releaseLink(now: now)
    }

    private func offerInbound(_ from: Source, _ frames: [UnsafeRawBufferPointer]) {
        let copies = frames.map { Array($0) }
        inLink.offer((from, copies), bytes: copies.reduce(0) { $0 + $1.count }, at: clock.monotonicNanos())
    }

    private func releaseLink(now: Int64) {
        guard !conditions.partitioned else { return }
        link.releaseDue(at: now) { item in withBuffers(item.1) { deliverNow(item.0, buffers: $0) } }
    }

    /// Hands a message to its socket. A socket that will not take it (peer not connected, queue
    /// full) drops it: the machines' timeouts and re-sent offers recover or fail the transfer.
    private func deliverNow(_ target: Target, buffers: [UnsafeRawBufferPointer]) {
        switch target {
        case .peer(let s):
            _ = try? s.send(buffers: buffers, dontWait: true)
        case .router(let identity):
            identity.withUnsafeBytes { id in _ = try? router.send(buffers: [id] + buffers, dontWait: true) }
        }
    }

    private func withBuffers(_ frames: [[UInt8]], _ body: ([UnsafeRawBufferPointer]) -> Void) {
        // Nest withUnsafeBytes over every frame (messages have 1 to 3 frames).
        func go(_ i: Int, _ acc: [UnsafeRawBufferPointer]) {
            if i == frames.count { body(acc); return }
            frames[i].withUnsafeBytes { go(i + 1, acc + [$0]) }
        }
        go(0, [])
    }

    /// The link as a reliable stream sees it: no loss (see `DataPlaneConfig.network`), and a
    /// partition holds frames (`pump` stops releasing them) instead of dropping them.
    static func streamConditions(_ c: NetworkConditions) -> NetworkConditions { var s = c; s.loss = 0; s.partitioned = false; return s }

    static func advertised(_ bound: String, host: String?) -> String {
        guard let host, bound.hasPrefix("tcp://"), let colon = bound.lastIndex(of: ":") else { return bound }
        return "tcp://\(host)\(bound[colon...])"
    }
}
