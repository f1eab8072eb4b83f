import Cluster
import Foundation
import Logging
import Protocol
import Scheduling
import Wire

/// Settings of a coordinator process.
public struct CoordinatorConfig {
    public var endpoint: String = "tcp://127.0.0.1:7700"
    public var stateDirectory: String
    /// Directory written by `strato keys generate`; nil runs without CURVE (open, said at start).
    public var keysDirectory: String?
    public var detector = FailureDetectorConfig.default
    public var heartbeatIntervalMs: UInt32 = 200
    public var maxFrameBytes = EnvelopeCodec.defaultMaxFrameBytes
    /// Scheduling policy for offline jobs (see `Policies`).
    public var policy = "hybrid"
    /// Trace seconds per wall second for job execution (1 = real time).
    public var timeScale = 1.0
    /// Seed data to fill an empty knowledge base from (nil: leave it empty).
    public var dataDirectory: String?
    /// Record this process's own trace events (the collector always accepts agents' batches).
    public var trace = false
    public var traceHeartbeatSample: UInt64 = 5

    public init(stateDirectory: String) { self.stateDirectory = stateDirectory }
}

/// The coordinator process: a ROUTER socket on the control endpoint, the membership state machine,
/// command delivery, and the durable state store.
///
/// **Ownership:** `run()` owns the ROUTER socket and the store on the calling thread until `stop()`
/// is called from any thread (e.g. a signal handler's flag). All state lives on that thread.
public final class CoordinatorServer: CoordinatorServices, @unchecked Sendable {
    public let config: CoordinatorConfig
    public let clock: Clock
    public private(set) var logger: Logger
    private let codec: EnvelopeCodec
    private let context = ZMQContext()
    private var zap: ZAPAuthenticator?

    private var openStore: StateStore?
    /// The store; only valid once `run()` has opened it (controllers are called after that).
    public var store: StateStore { openStore! }
    public private(set) var membership: Membership
    /// The features' controllers, and which handles what: reports and commands by feature name,
    /// operator requests by envelope body. The shell has no case of its own for any of them.
    private let controllers: [CoordinatorFeature]
    private var controllerByFeature: [String: CoordinatorFeature] = [:]
    private var controllerByBody: [String: CoordinatorFeature] = [:]
    private var outstanding = OutstandingCommands()
    /// Keys, roles and which connection each node is bound to (see `ControlAccess`).
    private var access = ControlAccess(keys: nil)
    private var keysFileStamp: [Int] = []
    private var reloadKeysRequested = false
    private var counters: [String: UInt64] = [:]
    private var countersDirty = false
    private var dirtyNodes = Set<String>()
    private var pendingEvents: [StateStore.Event] = []
    /// Nodes whose membership changed this turn (written before the turn's replies go out).
    private var changedNodes = Set<String>()
    private var heartbeatRowsDue = false
    private var maxNodeRowsPerTurn = 500
    private struct DeferredReply { var identity: [UInt8]; var recipient: String; var inReplyTo: UInt64; var body: Envelope.OneOf_Body }
    /// Replies and commands of the turn in progress, sent once it has committed.
    private var afterCommit: [DeferredReply] = []
    /// Ids of commands sent without a row in the command table (`enqueueTransient`).
    private var transient = Set<UInt64>()
    private var turnOpen = false
    private var latencies = LatencyWindow()
    private var heartbeatRate = RateMeter()
    private var heartbeatsHandled: UInt64 = 0
    private var nextMessageID: UInt64 = 0
    private var epoch: UInt64 = 0
    private var startedAtWall: Int64 = 0
    private var logBudget: [String: Int] = [:]
    private var collector: TraceCollector!
    /// This coordinator's trace recorder (its own, not the process's, when it was given a context).
    public let tracer: Tracer
    private var lastCounterCPU: (cpu: Double, at: Int64)?
    private var bytesSent: UInt64 = 0
    private var bytesReceived: UInt64 = 0

    private let stopLock = NSLock()
    private var stopRequested = false
    /// The endpoint actually bound (with the real port when the config asked for port 0).
    public private(set) var boundEndpoint = ""
    private let readySemaphore = DispatchSemaphore(value: 0)

    public convenience init(config: CoordinatorConfig, features: [CoordinatorFeature] = [], clock: Clock = SystemClock.shared,
                            logger: Logger = Logger(label: "strato.coordinator")) {
        self.init(config: config, features: features, context: NodeContext(clock: clock, logger: logger))
    }

    public init(config: CoordinatorConfig, features: [CoordinatorFeature] = [], context: NodeContext) {
        self.config = config
        self.clock = context.clock
        self.logger = context.logger
        self.tracer = context.tracer
        self.codec = EnvelopeCodec(maxFrameBytes: config.maxFrameBytes)
        self.membership = Membership(config: config.detector)
        self.controllers = features
        for c in features {
            for f in c.features { controllerByFeature[f] = c }
            for b in c.requestBodies { controllerByBody[b] = c }
        }
    }

    public func stop() { stopLock.lock(); stopRequested = true; stopLock.unlock() }
    /// Reads authorized_keys again at the next loop turn (SIGHUP; changes are also noticed within a second).
    public func requestKeyReload() { stopLock.lock(); reloadKeysRequested = true; stopLock.unlock() }
    private func takeReloadRequest() -> Bool {
        stopLock.lock(); defer { stopLock.unlock() }
        let r = reloadKeysRequested; reloadKeysRequested = false; return r
    }
    private var shouldStop: Bool { stopLock.lock(); defer { stopLock.unlock() }; return stopRequested }

    /// Blocks until the coordinator has bound its endpoint (for in-process use by benchmarks/tests).
    public func waitUntilReady() { readySemaphore.wait(); readySemaphore.signal() }

    // MARK: Main loop

    public func run() throws {
        // Before anything touches the directory: a second coordinator stops here, having changed nothing.
        let stateLock = try StateDirectoryLock(directory: config.stateDirectory)
        defer { stateLock.release() }
        openStore = try StateStore(directory: config.stateDirectory, schemas: controllers.flatMap(\.storeSchema))
        epoch = try store.nextEpoch()
        startedAtWall = clock.wallNanos()
        let now = clock.monotonicNanos()
        let restored = try store.loadNodes()
        membership.restore(restored, now: now)
        for c in try store.loadPendingCommands() { outstanding.add(c.command, now: now, attempts: c.attempts) }
        counters = try store.loadCounters()
        try store.batch { for c in controllers { try c.start(self, restoredNodes: restored) } }
        collector = try TraceCollector(stateDirectory: config.stateDirectory)
        defer { collector.close() }
        if config.trace {
            try tracer.enable(process: "coordinator", spoolDirectory: collector.directory, heartbeatSample: config.traceHeartbeatSample)
            tracer.instant("coordinator start", category: "lifecycle", track: "decisions",
                           args: ["epoch": "\(epoch)", "restored_nodes": "\(restored.count)", "pending_commands": "\(outstanding.count)"])
        }
        logger.info("coordinator starting", metadata: [
            "epoch": "\(epoch)", "state": "\(config.stateDirectory)", "restored_nodes": "\(restored.count)",
            "pending_commands": "\(outstanding.count)", "libzmq": "\(ZMQContext.libraryVersion)"])

        let router = try ZMQSocket(context, .router)
        defer { router.close(); zap?.stop(); context.terminate() }
        try router.setHighWaterMarks(send: 100_000, receive: 100_000)
        if let dir = config.keysDirectory {
            let keys = KeyDirectory(path: dir)
            let entries = try keys.authorizedEntries()
            access = ControlAccess(keys: entries)
            keysFileStamp = Self.fileStamp(keys.file("authorized_keys"))
            let allowed = Set(entries.keys)
            let auth = ZAPAuthenticator(context: context, allowedPublicKeys: allowed) { [logger] key, address in
                logger.warning("refused a client with an unknown CURVE key", metadata: ["key": "\(key)", "peer": "\(address)"])
            }
            try auth.start()
            zap = auth
            try router.makeCurveServer(try keys.coordinatorKeys())
            let roles = Dictionary(grouping: entries.values, by: \.role).mapValues(\.count)
            logger.info("CURVE security on: traffic encrypted, \(allowed.count) authorised client keys", metadata: [
                "keys": "\(dir)", "roles": "\(roles.sorted { $0.key < $1.key }.map { "\($0.key.rawValue)=\($0.value)" }.joined(separator: ","))"])
        } else {
            logger.warning("running OPEN: no --keys given, so traffic is not encrypted and any client may connect")
        }
        try router.bind(config.endpoint)
        boundEndpoint = try router.lastEndpoint()
        logger.info("listening", metadata: ["endpoint": "\(boundEndpoint)"])
        readySemaphore.signal()

        var lastTick: Int64 = 0, lastResend: Int64 = 0, lastFlush: Int64 = 0, lastHeartbeatFlush: Int64 = 0, lastCounters: Int64 = 0
        var lastKeyCheck: Int64 = 0
        var inbox: [Inbound] = []
        var collectTrace = false
        while !shouldStop {
            // Wake for the next job arrival or rate change rather than up to 20 ms late: at 1000×
            // every wall millisecond is a trace second, and the twin releases jobs on time.
            var waitMs = 20
            if let due = controllers.compactMap({ $0.nextDueWall() }).min() { waitMs = Int(max(0, min(20, (due - clock.wallNanos() + 999_999) / 1_000_000))) }
            inbox.removeAll(keepingCapacity: true)
            if try ZMQPoller.readable([router], timeoutMs: waitMs)[0] {
                // Drain what is queued, bounded so timers still run under load. Each message is
                // decoded in the buffer the socket lends (its payload is never copied out).
                for _ in 0..<4096 {
                    guard let m = try router.receiveWithUserID(dontWait: true, { frames, userID in self.inbound(frames, userID: userID) }) else { break }
                    inbox.append(m)
                }
            }
            // One loop turn = one transaction: everything the turn changes is committed together,
            // and only then do its replies and commands go out (group commit). A registration storm
            // of thousands of nodes costs one commit per turn instead of one per node.
            turnOpen = true
            do {
                try store.batch {
                    for m in inbox { handle(m, on: router) }
                    let mono = clock.monotonicNanos()
                    if config.keysDirectory != nil && (takeReloadRequest() || mono - lastKeyCheck >= .millis(1000)) {
                        lastKeyCheck = mono
                        reloadKeysIfChanged()
                    }
                    if mono - lastTick >= .millis(50) { lastTick = mono; tickDetector(now: mono) }
                    // Decide as soon as a job arrives or a report frees GPUs (cheap when nothing changed),
                    // and send new start/preempt commands at once rather than at the next resend round.
                    var decided = false
                    for c in controllers where c.turn(self) { decided = true }
                    // Fresh time: commands enqueued during the decisions are due from their own
                    // enqueue time, later than `mono` (with `mono` they would wait 100 ms).
                    if decided { resendCommands(on: router, now: clock.monotonicNanos()) }
                    if mono - lastResend >= .millis(100) { lastResend = mono; resendCommands(on: router, now: mono) }
                    if mono - lastFlush >= .millis(250) {
                        lastFlush = mono
                        collectTrace = true
                        // Heartbeat-only changes (telemetry, last heard) are informational after a
                        // restart, so they are written every 10 s; membership changes go out at once.
                        if mono - lastHeartbeatFlush >= .millis(10_000) { lastHeartbeatFlush = mono; heartbeatRowsDue = true }
                        try flush()
                    } else if heartbeatRowsDue {
                        try flush()
                    }
                    try saveTurnEffects()
                }
                turnOpen = false
                sendAfterCommit(on: router)
            } catch {
                // Nothing of this turn was promised: its replies are dropped and peers send again.
                turnOpen = false
                count("turn_commit_failed")
                logLimited("commit", "could not commit a loop turn (\(afterCommit.count) replies withheld): \(error)")
                afterCommit.removeAll()
            }
            let mono = clock.monotonicNanos()
            if collectTrace { collectTrace = false; collectOwnTrace(now: mono) }
            if tracer.isEnabled && mono - lastCounters >= .millis(1000) { lastCounters = mono; recordCounters(now: mono) }
        }
        heartbeatRowsDue = true
        maxNodeRowsPerTurn = .max
        do { try store.batch { try flush(); try saveTurnEffects() } } catch { logger.error("final state flush failed: \(error)") }
        if tracer.isEnabled {
            tracer.instant("coordinator stop", category: "lifecycle", track: "decisions")
            collectOwnTrace(now: clock.monotonicNanos())
            tracer.disable()
        }
        logger.info("coordinator stopped")
    }

    // MARK: Messages

    /// One message as it came off the socket: its routing identity and key, and its frame decoded.
    private struct Inbound {
        var identity: [UInt8]
        var userID: String?
        var frameCount: Int
        var message: Result<DecodedFrame, EnvelopeDecodeError>
        /// The id of a message that did not decode, where it could be read (0 otherwise).
        var offendingMessageID: UInt64 = 0
    }

    private func inbound(_ frames: [UnsafeRawBufferPointer], userID: String?) -> Inbound {
        for f in frames { bytesReceived += UInt64(f.count) }
        let identity = frames.first.map { [UInt8]($0) } ?? []
        guard frames.count == 2 else {
            return Inbound(identity: identity, userID: userID, frameCount: frames.count, message: .failure(.malformed("frame count")))
        }
        do {
            return Inbound(identity: identity, userID: userID, frameCount: 2, message: .success(try codec.decodeFrame(frames[1])))
        } catch {
            let e = error as? EnvelopeDecodeError ?? .malformed("\(error)")
            return Inbound(identity: identity, userID: userID, frameCount: 2, message: .failure(e),
                           offendingMessageID: codec.messageIDIfReadable([UInt8](frames[1])))
        }
    }

    private func handle(_ m: Inbound, on router: ZMQSocket) {
        let receivedAt = clock.wallNanos()
        guard m.frameCount == 2 else {
            count("rejected_malformed")
            logLimited("malformed", "dropped a message with \(m.frameCount) frames (expected identity + one envelope)")
            if m.frameCount > 1 {
                reply(on: router, to: m.identity, recipient: "", inReplyTo: 0, .error(errorReply(.malformed, "expected exactly one envelope frame, got \(m.frameCount - 1)")))
            }
            return
        }
        let identity = m.identity
        let frame: DecodedFrame
        switch m.message {
        case .success(let f): frame = f
        case .failure(let e):
            count(e.counterName)
            logLimited(e.counterName, "rejected a frame: \(e)")
            var err = errorReply(e.code, e.description)
            err.offendingMessageID = m.offendingMessageID
            reply(on: router, to: identity, recipient: "", inReplyTo: err.offendingMessageID, .error(err))
            return
        }
        let peer = Peer(connection: identity, key: m.userID)
        // Heartbeats, most of the traffic, are taken as header and body: no envelope is built.
        if case .heartbeat(let f) = frame {
            let header = f.header
            count("received_heartbeat")
            if let refusal = access.admit(peer, need: .agent) {
                refuse(refusal, header, bodyName: "heartbeat", isError: false, identity, router)
                return
            }
            let flow = tracer.receivedFlow(header)
            handleHeartbeat(f.withoutTelemetry, telemetry: f.telemetry, header, peer, router, receivedAt: receivedAt)
            if flow != 0 {
                tracer.record(.flowIn, "heartbeat", category: "message", track: "control", at: receivedAt, flow: flow)
                tracer.span("handle heartbeat", category: "message", track: "control", start: receivedAt, end: clock.wallNanos(),
                            args: ["from": header.sender])
            }
            return
        }
        let envelope = frame.envelope
        count("received_\(envelope.bodyName)")
        // The key's role first: a key removed from authorized_keys, or one sending what its role
        // may not, gets a named error (errors from peers are only counted: no reply to a reply).
        if let refusal = access.admit(peer, need: need(for: envelope)) {
            refuse(refusal, envelope, identity, router)
            return
        }
        let flow = tracer.receivedFlow(envelope)
        defer {
            if flow != 0 {
                tracer.record(.flowIn, envelope.bodyName, category: "message", track: "control", at: receivedAt, flow: flow)
                tracer.span("handle \(envelope.bodyName)", category: "message", track: "control", start: receivedAt, end: clock.wallNanos(),
                            args: ["from": envelope.sender])
            }
        }
        switch envelope.body {
        case .traceBatch(let b):
            do {
                let ack = try collector.store(b)
                count("trace_batches_collected")
                reply(on: router, to: identity, recipient: envelope.sender, inReplyTo: envelope.messageID, .traceBatchAck(ack))
            } catch {
                // No ack: the sender keeps the batch and sends it again; its spool holds it anyway.
                count("trace_batches_failed")
                logLimited("trace_store", "could not store a trace batch from \(b.process): \(error)")
            }
        case .register(let r): handleRegister(r, envelope, peer, router)
        case .heartbeat(let hb): handleHeartbeat(hb, EnvelopeHeader(envelope), peer, router, receivedAt: receivedAt)
        case .commandAck(let ack): handleCommandAck(ack, envelope, peer, router)
        case .deregister(let d):
            if let refusal = ControlAccess.checkSender(envelope, node: d.nodeID) ?? speaks(for: d.nodeID, peer) {
                refuse(refusal, envelope, identity, router)
                return
            }
            if membership.deregister(d) {
                access.unbind(d.nodeID)
                event(d.nodeID, "left", d.reason.isEmpty ? "deregistered" : d.reason)
                persistNow(d.nodeID)
                logger.info("node left", metadata: ["node": "\(d.nodeID)", "reason": "\(d.reason)"])
            }
        case .statusRequest(let req):
            reply(on: router, to: identity, recipient: envelope.sender, inReplyTo: envelope.messageID, .statusReply(status(req)))
        case .operatorCommand(let oc):
            reply(on: router, to: identity, recipient: envelope.sender, inReplyTo: envelope.messageID,
                  handleOperatorCommand(oc, router: router))
        case .error(let e):
            count("errors_from_peers")
            logLimited("peer_error", "peer \(envelope.sender) reported: \(e.message)")
        default:
            var controller = controllerByBody[envelope.bodyName]
            if case .featureRequest(let f)? = envelope.body { controller = controllerByFeature[f.feature] }
            if let controller {
                if let answer = controller.handleRequest(envelope, self) {
                    reply(on: router, to: identity, recipient: envelope.sender, inReplyTo: envelope.messageID, answer)
                }
                return
            }
            count("rejected_unknown_body")
            logLimited("unexpected_body", "'\(envelope.bodyName)' from \(envelope.sender) is not a message the coordinator accepts")
            reply(on: router, to: identity, recipient: envelope.sender, inReplyTo: envelope.messageID,
                  .error(errorReply(.unknownBody, "the coordinator does not accept '\(envelope.bodyName)' messages")))
        }
    }

    /// What a message needs of its sender's key.
    private func need(for envelope: Envelope) -> AccessNeed {
        switch envelope.body {
        case .register?, .heartbeat?, .commandAck?, .deregister?: return .agent
        case .operatorCommand?: return .operator
        case .featureRequest(let f)?: return controllerByFeature[f.feature]?.access(envelope) ?? .anyRole
        default: return controllerByBody[envelope.bodyName]?.access(envelope) ?? .anyRole
        }
    }

    /// Whether `peer` may speak for registered node `id` (heartbeat, ack, deregistration): the
    /// connection and key that registered it. A node not registered at all gets NOT_REGISTERED
    /// from membership's own rules (heartbeats) or here.
    private func speaks(for id: String, _ peer: Peer) -> ControlAccess.Refusal? {
        guard let r = membership.nodes[id] else { return .notRegistered(node: id) }
        // A dead or departed node speaks again only by registering (membership says so).
        guard r.info.state == .alive || r.info.state == .suspect else { return nil }
        return access.speaksFor(id, peer)
    }

    private func refuse(_ refusal: ControlAccess.Refusal, _ envelope: Envelope, _ identity: [UInt8], _ router: ZMQSocket) {
        var isError = false
        if case .error? = envelope.body { isError = true }
        refuse(refusal, EnvelopeHeader(envelope), bodyName: envelope.bodyName, isError: isError, identity, router)
    }

    private func refuse(_ refusal: ControlAccess.Refusal, _ header: EnvelopeHeader, bodyName: String, isError: Bool, _ identity: [UInt8], _ router: ZMQSocket) {
        count(refusal.counter)
        logLimited(refusal.counter, "refused '\(bodyName)' from \(header.sender.isEmpty ? "?" : header.sender): \(refusal.message)")
        if isError { return }
        reply(on: router, to: identity, recipient: header.sender, inReplyTo: header.messageID, .error(errorReply(refusal.code, refusal.message)))
    }

    /// Reads authorized_keys again when it changed (or on request): new keys are admitted at their
    /// handshake, a removed key's open connections are refused message by message from now on. A
    /// file that does not parse leaves the keys as they were (said in the log, counted).
    private func reloadKeysIfChanged() {
        guard let dir = config.keysDirectory else { return }
        let keys = KeyDirectory(path: dir)
        let stamp = Self.fileStamp(keys.file("authorized_keys"))
        guard stamp != keysFileStamp else { return }
        keysFileStamp = stamp
        do {
            let entries = try keys.authorizedEntries()
            let removed = Set(access.keys?.keys.map { $0 } ?? []).subtracting(entries.keys)
            access.reload(entries)
            zap?.update(allowedPublicKeys: Set(entries.keys))
            count("authorized_keys_reloaded")
            event("coordinator", "keys", "authorized_keys reloaded: \(entries.count) keys, \(removed.count) removed")
            logger.notice("authorized_keys reloaded", metadata: ["keys": "\(entries.count)", "removed": "\(removed.count)"])
        } catch {
            count("authorized_keys_unreadable")
            logger.error("authorized_keys changed but cannot be read; keeping the keys loaded before: \(error)")
        }
    }

    /// Modification time, inode and size: a rewrite (in place or by rename) changes one of them.
    static func fileStamp(_ path: String) -> [Int] {
        var st = stat()
        guard stat(path, &st) == 0 else { return [] }
        return [Int(st.st_mtim.tv_sec), Int(st.st_mtim.tv_nsec), Int(st.st_ino), Int(st.st_size)]
    }

    private func handleRegister(_ r: Register, _ envelope: Envelope, _ peer: Peer, _ router: ZMQSocket) {
        let identity = peer.connection
        if let refusal = ControlAccess.checkSender(envelope, node: r.nodeID) ?? access.mayRegister(r.nodeID, from: peer) {
            refuse(refusal, envelope, identity, router)
            return
        }
        let outcome = membership.register(r, instanceID: r.instanceID, now: clock.monotonicNanos(), wallNow: clock.wallNanos())
        switch outcome {
        case let .accepted(incarnation, newLife):
            access.bind(r.nodeID, to: peer)
            event(r.nodeID, newLife ? "registered" : "reconciled",
                  "incarnation \(incarnation), kind \(r.kind.name), running \(r.running.count)")
            count(newLife ? "registrations" : "reconciliations")
            for c in controllers { c.nodeRegistered(r, newLife: newLife, self) }
            persistNow(r.nodeID)   // durable (with its counters and jobs) before we acknowledge
            var ack = RegisterAck()
            ack.nodeID = r.nodeID
            ack.incarnation = incarnation
            ack.coordinatorEpoch = epoch
            ack.heartbeatIntervalMs = config.heartbeatIntervalMs
            reply(on: router, to: identity, recipient: r.nodeID, inReplyTo: envelope.messageID, .registerAck(ack))
            outstanding.expedite(nodeID: r.nodeID, now: clock.monotonicNanos())
            logger.info(newLife ? "node registered" : "node reconciled", metadata: [
                "node": "\(r.nodeID)", "kind": "\(r.kind.name)", "incarnation": "\(incarnation)", "running": "\(r.running.count)"])
        case let .rejected(code, message):
            count(code == .nodeIDConflict ? "rejected_node_id_conflict" : "rejected_invalid_registration")
            event(r.nodeID.isEmpty ? "?" : r.nodeID, "registration_rejected", message)
            logLimited("register_\(code.rawValue)", message)
            reply(on: router, to: identity, recipient: r.nodeID, inReplyTo: envelope.messageID, .error(errorReply(code, message)))
        }
    }

    /// `telemetry`: the heartbeat's telemetry as received, kept undecoded until the node's status is read.
    private func handleHeartbeat(_ hb: Heartbeat, telemetry: TelemetryBytes? = nil, _ envelope: EnvelopeHeader, _ peer: Peer, _ router: ZMQSocket, receivedAt: Int64) {
        let identity = peer.connection
        if let refusal = ControlAccess.checkSender(envelope, node: hb.nodeID) ?? (membership.nodes[hb.nodeID] == nil ? nil : speaks(for: hb.nodeID, peer)) {
            refuse(refusal, envelope, bodyName: "heartbeat", isError: false, identity, router)
            return
        }
        let mono = clock.monotonicNanos()
        switch membership.heartbeat(hb, telemetry: telemetry, now: mono, wallNow: receivedAt) {
        case .ok(let revived):
            dirtyNodes.insert(hb.nodeID)
            heartbeatsHandled += 1
            heartbeatRate.add(at: mono)
            // Sent → state updated, on the coordinator's clock: correct the agent's timestamp by
            // its estimated offset (coordinator − agent).
            let offset = hb.hasClock ? hb.clock.offsetNanos : 0
            latencies.record(max(0, clock.wallNanos() - (envelope.sentAtUnixNanos + offset)))
            if revived {
                event(hb.nodeID, "alive", "heard again")
                persistNow(hb.nodeID)
                logger.info("node alive again", metadata: ["node": "\(hb.nodeID)"])
            }
            var ack = HeartbeatAck()
            if !hb.reports.isEmpty {
                // Each feature's reports go to its controller, which makes what must be durable so
                // before the ack settles it (the turn commits before the ack goes out).
                var byFeature: [String: [FeatureReport]] = [:]
                for r in hb.reports { byFeature[r.feature, default: []].append(r) }
                for (feature, reports) in byFeature.sorted(by: { $0.key < $1.key }) {
                    guard let controller = controllerByFeature[feature] else {
                        count("reports_for_unknown_feature")
                        logLimited("unknown_feature", "\(hb.nodeID) reported for feature '\(feature)', which this coordinator does not run")
                        continue
                    }
                    let settled = controller.reports(reports, feature: feature, from: hb.nodeID, clockOffsetNanos: offset, self)
                    if !settled.isEmpty { var sr = SettledReports(); sr.feature = feature; sr.keys = settled; ack.settled.append(sr) }
                }
            }
            ack.nodeID = hb.nodeID
            ack.sequence = hb.sequence
            ack.receivedAtUnixNanos = receivedAt
            ack.coordinatorEpoch = epoch
            ack.sentAtUnixNanos = clock.wallNanos()
            reply(on: router, to: identity, recipient: hb.nodeID, inReplyTo: envelope.messageID, .heartbeatAck(ack))
        case .mustRegister(let why):
            count("heartbeats_from_unregistered")
            reply(on: router, to: identity, recipient: hb.nodeID, inReplyTo: envelope.messageID, .error(errorReply(.notRegistered, why)))
        }
    }

    private func handleCommandAck(_ ack: CommandAck, _ envelope: Envelope, _ peer: Peer, _ router: ZMQSocket) {
        if let refusal = ControlAccess.checkSender(envelope, node: ack.nodeID) ?? speaks(for: ack.nodeID, peer) {
            refuse(refusal, envelope, peer.connection, router)
            return
        }
        // Matched by (node, command id): an ack naming another node's command settles nothing.
        let entry: OutstandingCommands.Entry
        switch outstanding.acknowledge(ack.commandID, by: ack.nodeID) {
        case .settled(let e): entry = e
        case .unknown:
            count("duplicate_command_acks")
            return
        case .otherNode(let owner):
            count("refused_ack_other_node")
            logLimited("ack_other_node", "\(ack.nodeID) acknowledged command \(ack.commandID), which is \(owner)'s: not settled")
            return
        }
        let command = entry.command
        switch command.action {
        case .setLabels(let s)? where ack.ok: membership.setLabels(s.labels, on: command.nodeID)
        case .drain(let d)? where ack.ok: membership.setDrained(d.drain, on: command.nodeID)
        case .feature(let f)?:
            if let controller = controllerByFeature[f.feature] { controller.acknowledged(command, f, ack: ack, self) }
        default: break
        }
        // Transient commands (a batch of requests) are not in the command table: no event either.
        if transient.remove(ack.commandID) != nil { return }
        event(command.nodeID, "command_ack", "command \(ack.commandID) ok=\(ack.ok) \(ack.detail)")
        count("commands_acknowledged")
        do {
            try store.batch {
                try store.markAcknowledged(ack, at: clock.wallNanos())
                persistNow(command.nodeID)
            }
        } catch {
            logger.error("could not persist a command acknowledgement: \(error)")
        }
    }

    private func handleOperatorCommand(_ oc: OperatorCommand, router: ZMQSocket) -> Envelope.OneOf_Body {
        guard membership.nodes[oc.nodeID] != nil else {
            count("rejected_unknown_node")
            return .error(errorReply(.unknownNode, "no node '\(oc.nodeID)' (see `strato status`)"))
        }
        guard oc.command.action != nil else {
            count("rejected_invalid_request")
            return .error(errorReply(.invalidRequest, "the command has no action"))
        }
        var command = oc.command
        command.nodeID = oc.nodeID
        do {
            command = try enqueue(command)
        } catch {
            logger.error("could not persist a command: \(error)")
            return .error(errorReply(.invalidRequest, "the coordinator could not persist the command: \(error)"))
        }
        resendCommands(on: router, now: clock.monotonicNanos())
        var reply = OperatorCommandReply()
        reply.commandID = command.commandID
        reply.accepted = true
        reply.detail = membership.isReachable(oc.nodeID) ? "sent" : "queued until \(oc.nodeID) is back"
        return .operatorCommandReply(reply)
    }

    // MARK: Timers

    private func tickDetector(now: Int64) {
        for t in membership.tick(now: now) {
            let silence = String(format: "%.2f s", Double(t.silenceNanos) / 1e9)
            event(t.nodeID, t.to.rawValue, "silent for \(silence)")
            persistNow(t.nodeID)
            count(t.to == .dead ? "nodes_declared_dead" : "nodes_suspected")
            if t.to == .dead {
                access.unbind(t.nodeID)
                for c in controllers { c.nodeDead(t.nodeID, self) }
            }
            logger.log(level: t.to == .dead ? .warning : .notice, "node \(t.to.rawValue)",
                       metadata: ["node": "\(t.nodeID)", "silence": "\(silence)"])
        }
    }

    // MARK: Services for controllers

    /// Persists a new command (with a fresh id) and queues it for delivery.
    @discardableResult
    public func enqueue(_ c: Command) throws -> Command {
        var command = c
        command.commandID = try store.nextCommandID()
        try store.savePending(command, attempts: 0, at: clock.wallNanos())
        outstanding.add(command, now: clock.monotonicNanos())
        return command
    }

    public func enqueueTransient(_ c: Command) throws {
        var command = c
        command.commandID = try store.nextCommandID()
        outstanding.add(command, now: clock.monotonicNanos())
        transient.insert(command.commandID)
    }

    public func cancelCommands(where shouldCancel: (Command) -> Bool) {
        for c in outstanding.cancel(where: shouldCancel) { transient.remove(c.commandID) }
    }

    public var pendingCommands: [Command] { outstanding.entries.sorted { $0.key < $1.key }.map(\.value.command) }
    public var timeScale: Double { config.timeScale }
    public var dataDirectory: String? { config.dataDirectory }
    public func counter(_ name: String) -> UInt64 { counters[name] ?? 0 }

    private func resendCommands(on router: ZMQSocket, now: Int64) {
        let due = outstanding.due(now: now) { [membership, access] in membership.isReachable($0) && access.route($0) != nil }
        for command in due {
            guard let identity = access.route(command.nodeID) else { continue }
            reply(on: router, to: identity, recipient: command.nodeID, inReplyTo: 0, .command(command))
            count("commands_sent")
        }
    }

    /// Periodic writes, inside the turn's transaction: node records changed by heartbeats (only
    /// telemetry and last-heard times, so at most `maxNodeRowsPerTurn` a turn: 10,000 nodes are
    /// written over several turns instead of stalling one), jobs' progress.
    private func flush() throws {
        if heartbeatRowsDue {
            var rows: [NodeRecord] = []
            while rows.count < maxNodeRowsPerTurn, let id = dirtyNodes.popFirst() {
                if let r = membership.nodes[id] { rows.append(r) }
            }
            try store.save(rows)
            heartbeatRowsDue = !dirtyNodes.isEmpty
        }
        for c in controllers { try c.flush(self) }
    }

    /// What every turn writes before its replies go out: nodes whose membership changed (a
    /// registration is durable before its ack), events and counters.
    private func saveTurnEffects() throws {
        if !changedNodes.isEmpty {
            try store.save(changedNodes.compactMap { membership.nodes[$0] })
            for id in changedNodes { dirtyNodes.remove(id) }
            changedNodes.removeAll(keepingCapacity: true)
        }
        if !pendingEvents.isEmpty { try store.append(pendingEvents); pendingEvents.removeAll() }
        if countersDirty { try store.saveCounters(counters); countersDirty = false }
    }

    /// A node's membership changed: its record is written with this turn's commit.
    private func persistNow(_ nodeID: String) { changedNodes.insert(nodeID) }

    private func sendAfterCommit(on router: ZMQSocket) {
        for r in afterCommit { transmit(r.body, to: r.identity, recipient: r.recipient, inReplyTo: r.inReplyTo, on: router) }
        afterCommit.removeAll(keepingCapacity: true)
    }

    // MARK: Status

    private func status(_ req: StatusRequest) -> StatusReply {
        var reply = StatusReply()
        reply.coordinatorEpoch = epoch
        reply.coordinatorVersion = StratolabVersion.string
        reply.secure = config.keysDirectory != nil
        reply.startedAtUnixNanos = startedAtWall
        reply.stateDir = config.stateDirectory
        reply.pendingCommands = UInt64(outstanding.count)
        let wall = clock.wallNanos()
        reply.nodes = membership.nodes.values.sorted { $0.id < $1.id }.map { r in
            var s = r.status
            s.lastHeartbeatAgeNanos = r.lastHeardWall > 0 ? max(0, wall - r.lastHeardWall) : -1
            return s
        }
        var allCounters = counters
        if let z = zap {
            allCounters["curve_clients_admitted"] = z.acceptedCount
            allCounters["rejected_curve_key"] = z.rejectedCount
        }
        reply.counters = allCounters.sorted { $0.key < $1.key }.map {
            var c = Stratolab_V1_Counter(); c.name = $0.key; c.value = $0.value; return c
        }
        var stats = ControlStats()
        stats.heartbeatsHandled = heartbeatsHandled
        stats.heartbeatsPerSecond = heartbeatRate.rate(at: clock.monotonicNanos())
        stats.heartbeatLatencyP50Ms = Double(latencies.percentile(50)) / 1e6
        stats.heartbeatLatencyP99Ms = Double(latencies.percentile(99)) / 1e6
        stats.latencySamples = UInt64(latencies.count)
        stats.processCpuSeconds = ProcessStats.cpuSeconds()
        reply.control = stats
        return reply
    }

    // MARK: Helpers

    /// Sends a reply or command; inside a loop turn it waits for the turn's commit, so nothing a
    /// peer is told can be lost by a crash.
    private func reply(on router: ZMQSocket, to identity: [UInt8], recipient: String, inReplyTo: UInt64, _ body: Envelope.OneOf_Body) {
        var body = body
        // Every error names the message it answers, when that message's id could be read.
        if case .error(var e) = body, e.offendingMessageID == 0, inReplyTo != 0 { e.offendingMessageID = inReplyTo; body = .error(e) }
        if turnOpen {
            afterCommit.append(DeferredReply(identity: identity, recipient: recipient, inReplyTo: inReplyTo, body: body))
            return
        }
        transmit(body, to: identity, recipient: recipient, inReplyTo: inReplyTo, on: router)
    }

    /// A heartbeat ack, encoded from header and body (no envelope built: acks are most of what
    /// the coordinator sends).
    private func transmitAck(_ ack: HeartbeatAck, to identity: [UInt8], recipient: String, inReplyTo: UInt64, on router: ZMQSocket) {
        nextMessageID += 1
        var header = EnvelopeHeader(messageID: nextMessageID, sender: "coordinator", sentAtUnixNanos: ack.sentAtUnixNanos,
                                    recipient: recipient, inReplyTo: inReplyTo)
        let body = HotBody.heartbeatAck(ack)
        let flow = tracer.tracesMessage(header, body) ? tracer.markTraced(&header) : 0
        do {
            var sent = false, size = 0
            try codec.withEncoded(header, body) { f in
                size = f.count
                sent = try identity.withUnsafeBytes { try router.send(buffers: [$0, f], dontWait: true) }
            }
            if sent { bytesSent += UInt64(size + identity.count) } else { count("send_dropped") }
        } catch {
            count("send_failed")
        }
        if flow != 0 {
            tracer.span("send heartbeat_ack", category: "message", track: "control", start: header.sentAtUnixNanos, end: clock.wallNanos(),
                        args: ["to": recipient])
            tracer.record(.flowOut, "heartbeat_ack", category: "message", track: "control", at: header.sentAtUnixNanos, flow: flow)
        }
    }

    private func transmit(_ body: Envelope.OneOf_Body, to identity: [UInt8], recipient: String, inReplyTo: UInt64, on router: ZMQSocket) {
        var body = body
        // The agent's clock estimate takes t3 as the moment the ack leaves, not when it was built
        // (the turn's commit came in between).
        if case .heartbeatAck(var ack) = body {
            ack.sentAtUnixNanos = clock.wallNanos()
            transmitAck(ack, to: identity, recipient: recipient, inReplyTo: inReplyTo, on: router)
            return
        }
        nextMessageID += 1
        var e = Envelope.make(sender: "coordinator", messageID: nextMessageID, sentAtNanos: clock.wallNanos(),
                              recipient: recipient, inReplyTo: inReplyTo, body: body)
        let flow = tracer.tracesMessage(e) ? tracer.markTraced(&e) : 0
        do {
            let frame = codec.encode(e)
            if try router.send([identity, frame], dontWait: true) { bytesSent += UInt64(frame.count + identity.count) } else { count("send_dropped") }
        } catch {
            count("send_failed")
        }
        if flow != 0 {
            tracer.span("send \(e.bodyName)", category: "message", track: "control", start: e.sentAtUnixNanos, end: clock.wallNanos(),
                        args: ["to": recipient])
            tracer.record(.flowOut, e.bodyName, category: "message", track: "control", at: e.sentAtUnixNanos, flow: flow)
        }
    }

    private func errorReply(_ code: ErrorCode, _ message: String) -> ErrorReply {
        var e = ErrorReply(); e.code = code; e.message = message; return e
    }

    public func count(_ name: String) {
        counters[name, default: 0] += 1
        countersDirty = true
    }

    public func event(_ nodeID: String, _ kind: String, _ detail: String) {
        let at = clock.wallNanos()
        pendingEvents.append(StateStore.Event(at: at, nodeID: nodeID, kind: kind, detail: detail))
        // Every membership change and decision is also a trace event.
        tracer.record(.instant, "\(kind) \(nodeID)", category: kind.hasPrefix("job") ? "decision" : "membership", track: "decisions",
                      at: at, args: ["node": nodeID, "detail": detail])
    }

    /// The coordinator's own events go straight into its collector file.
    private func collectOwnTrace(now: Int64) {
        guard tracer.isEnabled else { return }
        while let b = tracer.takeBatch(nowMono: now, clock: nil) {
            guard let ack = try? collector.store(b) else { return }
            tracer.acknowledge(ack)
        }
    }

    private func recordCounters(now: Int64) {
        var byState: [NodeState: Int] = [:]
        for r in membership.nodes.values { byState[r.info.state, default: 0] += 1 }
        let cpu = ProcessStats.cpuSeconds()
        var values: [String: Double] = [
            "rss_mb": Double(ProcessStats.residentBytes()) / 1_048_576,
            "heartbeats_per_s": heartbeatRate.rate(at: now),
            "pending_commands": Double(outstanding.count),
            "bytes_sent": Double(bytesSent), "bytes_received": Double(bytesReceived)]
        if let last = lastCounterCPU, now > last.at { values["cpu_percent"] = (cpu - last.cpu) / (Double(now - last.at) / 1e9) * 100 }
        lastCounterCPU = (cpu, now)
        tracer.counter("process", values)
        tracer.counter("nodes", ["alive": Double(byState[.alive] ?? 0), "suspect": Double(byState[.suspect] ?? 0),
                                 "dead": Double(byState[.dead] ?? 0), "left": Double(byState[.left] ?? 0)], track: "workload")
        for c in controllers { for (name, values) in c.traceCounters() { tracer.counter(name, values, track: "workload") } }

    }

    /// Logs the first 20 of each kind of problem, then every 1000th, so a flood cannot fill disks.
    public func logLimited(_ kind: String, _ message: String) {
        let n = logBudget[kind, default: 0] + 1
        logBudget[kind] = n
        if n <= 20 || n % 1000 == 0 {
            logger.warning("\(message)", metadata: n > 20 ? ["occurrences": "\(n)"] : [:])
        }
    }
}
