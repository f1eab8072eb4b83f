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
public final class CoordinatorServer: @unchecked Sendable {
    public let config: CoordinatorConfig
    private let clock: Clock
    private var logger: Logger
    private let codec: EnvelopeCodec
    private let context = ZMQContext()
    private var zap: ZAPAuthenticator?

    private var store: StateStore!
    private var membership: Membership
    private var outstanding = OutstandingCommands()
    private var routes: [String: [UInt8]] = [:]
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
    private var turnOpen = false
    private var latencies = LatencyWindow()
    private var heartbeatRate = RateMeter()
    private var heartbeatsHandled: UInt64 = 0
    private var nextMessageID: UInt64 = 0
    private var epoch: UInt64 = 0
    private var startedAtWall: Int64 = 0
    private var logBudget: [String: Int] = [:]
    private var jobs: JobManager!
    private var collector: TraceCollector!
    private var tracer: Tracer { Tracer.shared }
    private var lastCounterCPU: (cpu: Double, at: Int64)?
    private var bytesSent: UInt64 = 0
    private var bytesReceived: UInt64 = 0

    private let stopLock = NSLock()
    private var stopRequested = false
    /// The endpoint actually bound (with the real port when the config asked for port 0).
    public private(set) var boundEndpoint = ""
    private let readySemaphore = DispatchSemaphore(value: 0)

    public init(config: CoordinatorConfig, clock: Clock = SystemClock.shared, logger: Logger = Logger(label: "strato.coordinator")) {
        self.config = config
        self.clock = clock
        self.logger = logger
        self.codec = EnvelopeCodec(maxFrameBytes: config.maxFrameBytes)
        self.membership = Membership(config: config.detector)
    }

    public func stop() { stopLock.lock(); stopRequested = true; stopLock.unlock() }
    private var shouldStop: Bool { stopLock.lock(); defer { stopLock.unlock() }; return stopRequested }

    /// Blocks until the coordinator has bound its endpoint (for in-process use by benchmarks/tests).
    public func waitUntilReady() { readySemaphore.wait(); readySemaphore.signal() }

    // MARK: Main loop

    public func run() throws {
        store = try StateStore(directory: config.stateDirectory)
        epoch = try store.nextEpoch()
        startedAtWall = clock.wallNanos()
        let now = clock.monotonicNanos()
        let restored = try store.loadNodes()
        membership.restore(restored, now: now)
        for c in try store.loadPendingCommands() { outstanding.add(c.command, now: now, attempts: c.attempts) }
        counters = try store.loadCounters()
        try startJobManager(restored: restored)
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
            let allowed = try keys.authorizedKeys()
            let auth = ZAPAuthenticator(context: context, allowedPublicKeys: allowed) { [logger] key, address in
                logger.warning("refused a client with an unknown CURVE key", metadata: ["key": "\(key)", "peer": "\(address)"])
            }
            try auth.start()
            zap = auth
            try router.makeCurveServer(try keys.coordinatorKeys())
            logger.info("CURVE security on: traffic encrypted, \(allowed.count) authorised client keys", metadata: ["keys": "\(dir)"])
        } else {
            logger.warning("running OPEN: no --keys given, so traffic is not encrypted and any client may connect")
        }
        try router.bind(config.endpoint)
        boundEndpoint = try router.lastEndpoint()
        logger.info("listening", metadata: ["endpoint": "\(boundEndpoint)"])
        readySemaphore.signal()

        var lastTick: Int64 = 0, lastResend: Int64 = 0, lastFlush: Int64 = 0, lastHeartbeatFlush: Int64 = 0, lastCounters: Int64 = 0
        var frames: [[[UInt8]]] = []
        var collectTrace = false
        while !shouldStop {
            // Wake for the next job arrival or rate change rather than up to 20 ms late: at 1000×
            // every wall millisecond is a trace second, and the twin releases jobs on time.
            var waitMs = 20
            if let due = jobs.nextDueWall() { waitMs = Int(max(0, min(20, (due - clock.wallNanos() + 999_999) / 1_000_000))) }
            frames.removeAll(keepingCapacity: true)
            if try ZMQPoller.readable([router], timeoutMs: waitMs)[0] {
                // Drain what is queued, bounded so timers still run under load.
                for _ in 0..<4096 {
                    guard let f = try router.receive(dontWait: true) else { break }
                    for part in f { bytesReceived += UInt64(part.count) }
                    frames.append(f)
                }
            }
            // One loop turn = one transaction: everything the turn changes is committed together,
            // and only then do its replies and commands go out (group commit). A registration storm
            // of thousands of nodes costs one commit per turn instead of one per node.
            turnOpen = true
            do {
                try store.batch {
                    for f in frames { handle(f, on: router) }
                    let mono = clock.monotonicNanos()
                    if mono - lastTick >= .millis(50) { lastTick = mono; tickDetector(now: mono) }
                    // Decide as soon as a job arrives or a report frees GPUs (cheap when nothing changed),
                    // and send new start/preempt commands at once rather than at the next resend round.
                    let decided = scheduleJobs(on: router, now: mono)
                    if routeRequests(now: mono) || decided { resendCommands(on: router, now: mono) }
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

    private func handle(_ frames: [[UInt8]], on router: ZMQSocket) {
        let receivedAt = clock.wallNanos()
        guard frames.count == 2 else {
            count("rejected_malformed")
            logLimited("malformed", "dropped a message with \(frames.count) frames (expected identity + one envelope)")
            if let id = frames.first, frames.count > 1 {
                reply(on: router, to: id, recipient: "", inReplyTo: 0, .error(errorReply(.malformed, "expected exactly one envelope frame, got \(frames.count - 1)")))
            }
            return
        }
        let identity = frames[0], payload = frames[1]
        let envelope: Envelope
        do {
            envelope = try codec.decode(payload)
        } catch let e as EnvelopeDecodeError {
            count(e.counterName)
            logLimited(e.counterName, "rejected a frame: \(e)")
            var err = errorReply(e.code, e.description)
            err.offendingMessageID = codec.messageIDIfReadable(payload)
            reply(on: router, to: identity, recipient: "", inReplyTo: err.offendingMessageID, .error(err))
            return
        } catch {
            count("rejected_malformed")
            return
        }
        count("received_\(envelope.bodyName)")
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
        case .register(let r): handleRegister(r, envelope, identity, router)
        case .heartbeat(let hb): handleHeartbeat(hb, envelope, identity, router, receivedAt: receivedAt)
        case .commandAck(let ack): handleCommandAck(ack, router)
        case .deregister(let d):
            if membership.deregister(d) {
                routes[d.nodeID] = nil
                event(d.nodeID, "left", d.reason.isEmpty ? "deregistered" : d.reason)
                persistNow(d.nodeID)
                logger.info("node left", metadata: ["node": "\(d.nodeID)", "reason": "\(d.reason)"])
            }
        case .statusRequest(let req):
            reply(on: router, to: identity, recipient: envelope.sender, inReplyTo: envelope.messageID, .statusReply(status(req)))
        case .operatorCommand(let oc):
            reply(on: router, to: identity, recipient: envelope.sender, inReplyTo: envelope.messageID,
                  handleOperatorCommand(oc, now: clock.monotonicNanos(), router: router))
        case .submitJobs(let sj):
            var (accepted, rejected) = jobs.submit(sj.jobs)
            let svc = jobs.submit(services: sj.services)
            rejected += svc.rejected
            accepted += svc.accepted.count
            let started = accepted > 0 && jobs.startClockIfNeeded(wall: clock.wallNanos())
            do { try store.batch {
                try store.saveFutureJobs(jobs.futureJobs)
                for s in svc.accepted { try store.saveService(s) }
                if started { try store.setMetaValue("trace_t0_nanos", jobs.t0Wall) }
            } } catch { logger.error("could not persist submitted jobs: \(error)") }
            if !rejected.isEmpty { count("rejected_jobs") }
            for s in svc.accepted { event("coordinator", "service", "\(s.id): \(s.model) on \(s.gpusPerReplica)x\(s.gpuModel), SLO \(s.sloSeconds) s") }
            var r = SubmitJobsReply(); r.accepted = UInt32(accepted); r.rejected = rejected
            reply(on: router, to: identity, recipient: envelope.sender, inReplyTo: envelope.messageID, .submitJobsReply(r))
        case .submitRequests(let sr):
            // Stored before the reply: a request the client was told is accepted survives a crash.
            let (accepted, duplicates, rejected) = jobs.requests.submit(sr.requests, services: jobs.services)
            do { try store.batch { try store.saveRequests(jobs.requests.takeDirty()) } } catch {
                logger.error("could not persist requests: \(error)")
                return   // no reply: the client sends them again
            }
            if !rejected.isEmpty { count("rejected_requests") }
            var r = SubmitRequestsReply(); r.accepted = UInt32(accepted); r.duplicates = UInt32(duplicates); r.rejected = Array(rejected.prefix(100))
            reply(on: router, to: identity, recipient: envelope.sender, inReplyTo: envelope.messageID, .submitRequestsReply(r))
        case .requestsRequest(let rr):
            reply(on: router, to: identity, recipient: envelope.sender, inReplyTo: envelope.messageID,
                  .requestsReply(jobs.requestsReply(wall: clock.wallNanos(), includeRequests: rr.includeRequests,
                                                    replicaStarts: { [counters] in Int(counters["replica_starts/" + $0] ?? 0) })))
        case .jobsRequest:
            reply(on: router, to: identity, recipient: envelope.sender, inReplyTo: envelope.messageID, .jobsReply(jobs.jobsReply(wall: clock.wallNanos())))
        case .error(let e):
            count("errors_from_peers")
            logLimited("peer_error", "peer \(envelope.sender) reported: \(e.message)")
        default:
            count("rejected_unknown_body")
            logLimited("unexpected_body", "'\(envelope.bodyName)' from \(envelope.sender) is not a message the coordinator accepts")
            reply(on: router, to: identity, recipient: envelope.sender, inReplyTo: envelope.messageID,
                  .error(errorReply(.unknownBody, "the coordinator does not accept '\(envelope.bodyName)' messages")))
        }
    }

    private func handleRegister(_ r: Register, _ envelope: Envelope, _ identity: [UInt8], _ router: ZMQSocket) {
        let outcome = membership.register(r, instanceID: r.instanceID, now: clock.monotonicNanos(), wallNow: clock.wallNanos())
        switch outcome {
        case let .accepted(incarnation, newLife):
            routes[r.nodeID] = identity
            event(r.nodeID, newLife ? "registered" : "reconciled",
                  "incarnation \(incarnation), kind \(r.kind.name), running \(r.running.count)")
            count(newLife ? "registrations" : "reconciliations")
            if r.kind == .gpu && { if case .gpu? = r.capabilities.kind { return true }; return false }() {
                jobs.nodeUp(r.nodeID, gpuModel: r.capabilities.gpu.model, count: Int(r.capabilities.gpu.count), newLife: newLife,
                            now: jobs.traceNow(wall: clock.wallNanos()))
            }
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

    private func handleHeartbeat(_ hb: Heartbeat, _ envelope: Envelope, _ identity: [UInt8], _ router: ZMQSocket, receivedAt: Int64) {
        let mono = clock.monotonicNanos()
        switch membership.heartbeat(hb, now: mono, wallNow: receivedAt) {
        case .ok(let revived):
            routes[hb.nodeID] = identity
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
            if !hb.jobs.isEmpty {
                let (settled, stop) = jobs.apply(reports: hb.jobs, from: hb.nodeID, clockOffsetNanos: offset)
                // Terminal reports are made durable before the agent may forget them; plain progress
                // rides the periodic flush (a crash then resumes from the last checkpoint anyway).
                if !settled.isEmpty || !stop.isEmpty { persistJobs() }
                ack.settledJobs = settled
                for id in stop {
                    var c = Command(); var p = PreemptJob(); p.jobID = id; c.preemptJob = p; c.nodeID = hb.nodeID
                    do { try enqueue(c, now: mono) } catch { logger.error("could not persist a stop command: \(error)") }
                }
            }
            if !hb.requests.isEmpty {
                // Results are made durable before the agent is told to forget them.
                let settled = jobs.requests.complete(hb.requests, node: hb.nodeID, slo: { [jobs] in jobs!.services[$0]?.sloSeconds ?? .infinity },
                                                     traceTime: { [jobs] in jobs!.traceNow(wall: $0 + offset) })
                do {
                    try store.batch { try store.saveRequests(jobs.requests.takeDirty()) }
                    ack.settledRequests = settled
                } catch {
                    logger.error("could not persist request results: \(error)")
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

    private func handleCommandAck(_ ack: CommandAck, _ router: ZMQSocket) {
        guard let entry = outstanding.acknowledge(ack.commandID) else {
            count("duplicate_command_acks")
            return
        }
        if ack.ok {
            switch entry.command.action {
            case .setLabels(let s)?: membership.setLabels(s.labels, on: entry.command.nodeID)
            case .drain(let d)?: membership.setDrained(d.drain, on: entry.command.nodeID)
            case .preemptJob(let p)?: jobs.preemptAcknowledged(job: p.jobID, detail: ack.detail)
            case .startReplica(let r)?:
                jobs.replicaStarted(r.replicaID)
                count("replica_starts/" + r.serviceID)
                if let rec = jobs.scheduler.state.replicas[r.replicaID] { try? store.saveReplica(rec, ready: true) }
            default: break
            }
        } else if case .startJob(let s)? = entry.command.action, jobs.startCommand[s.jobID] == ack.commandID {
            logLimited("start_refused", "\(entry.command.nodeID) refused to start \(s.jobID): \(ack.detail)")
            jobs.startRefused(job: s.jobID, now: jobs.traceNow(wall: clock.wallNanos()))
        } else if case .startReplica(let r)? = entry.command.action, jobs.scheduler.state.replicas[r.replicaID] != nil {
            logLimited("replica_refused", "\(entry.command.nodeID) refused replica \(r.replicaID): \(ack.detail)")
            jobs.replicaFailed(r.replicaID)
        } else if case .serveRequests(let r)? = entry.command.action {
            // The agent does not serve this replica (it restarted): the replica is gone, its
            // requests go elsewhere.
            logLimited("serve_refused", "\(entry.command.nodeID) refused requests for \(r.replicaID): \(ack.detail)")
            jobs.requests.refused(r.requests.map(\.requestID), replica: r.replicaID)
            if jobs.scheduler.state.replicas[r.replicaID] != nil { jobs.replicaFailed(r.replicaID) }
        }
        if case .serveRequests? = entry.command.action, ack.ok { return }   // one per batch of requests: not an event
        event(entry.command.nodeID, "command_ack", "command \(ack.commandID) ok=\(ack.ok) \(ack.detail)")
        count("commands_acknowledged")
        do {
            try store.batch {
                try store.markAcknowledged(ack, at: clock.wallNanos())
                try store.saveJobs(jobs.takeDirty())
                persistNow(entry.command.nodeID)
            }
        } catch {
            logger.error("could not persist a command acknowledgement: \(error)")
        }
    }

    private func handleOperatorCommand(_ oc: OperatorCommand, now: Int64, router: ZMQSocket) -> Envelope.OneOf_Body {
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
            command = try enqueue(command, now: now)
        } catch {
            logger.error("could not persist a command: \(error)")
            return .error(errorReply(.invalidRequest, "the coordinator could not persist the command: \(error)"))
        }
        resendCommands(on: router, now: now)
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
                routes[t.nodeID] = nil
                jobs.nodeDead(t.nodeID, now: jobs.traceNow(wall: clock.wallNanos()))
                persistJobs()
            }
            logger.log(level: t.to == .dead ? .warning : .notice, "node \(t.to.rawValue)",
                       metadata: ["node": "\(t.nodeID)", "silence": "\(silence)"])
        }
    }

    /// Persists a new command (with a fresh id) and queues it for delivery.
    @discardableResult
    private func enqueue(_ c: Command, now: Int64) throws -> Command {
        var command = c
        command.commandID = try store.nextCommandID()
        try store.savePending(command, attempts: 0, at: clock.wallNanos())
        outstanding.add(command, now: now)
        return command
    }

    private func startJobManager(restored: [NodeRecord]) throws {
        var kb = try store.loadKnowledge()
        if kb.offline.isEmpty, let dir = config.dataDirectory {
            let (seeded, imported, _) = KnowledgeImporter.seeded(dataDirectory: dir)
            kb = seeded
            try store.saveKnowledge(rows: Array(kb.offline.values), facts: kb.facts)
            logger.info("knowledge base seeded", metadata: ["rows": "\(kb.offline.count)", "skipped": "\(imported.skipped.count)", "data": "\(dir)"])
        }
        guard let policy = Policies.named(config.policy) else {
            throw SQLiteError(code: 0, message: "unknown policy '\(config.policy)' (known: \(Policies.names.joined(separator: ", ")))", sql: "")
        }
        let t0 = try store.metaValue("trace_t0_nanos")
        jobs = JobManager(policy: policy, kb: kb, timeScale: config.timeScale, t0Wall: t0)
        for r in restored where r.status.kind == .gpu && { if case .gpu? = r.status.capabilities.kind { return true }; return false }() {
            let g = r.status.capabilities.gpu
            jobs.scheduler.state.addNode(NodeSlot(id: r.id, gpuModel: g.model, gpuCount: Int(g.count), alive: r.status.state != .dead))
        }
        let (future, records) = try store.loadJobs()
        jobs.restore(future: future, records: records)
        jobs.restore(services: try store.loadServices(), replicas: try store.loadReplicas(), requests: try store.loadRequests())
        // Start commands still pending, then the last acknowledged one per job, identify current runs.
        for (_, e) in outstanding.entries.sorted(by: { $0.key < $1.key }) { if case .startJob(let s)? = e.command.action { jobs.noteStartCommand(job: s.jobID, commandID: e.command.commandID) } }
        for (id, cmd) in try store.lastStartCommands() where jobs.startCommand[id] == nil { jobs.noteStartCommand(job: id, commandID: cmd) }
    }

    private func persistJobs() {
        guard !jobs.dirtyJobs.isEmpty else { return }
        do { try store.batch { try store.saveJobs(jobs.takeDirty()) } } catch { logger.error("could not persist jobs: \(error)") }
    }

    /// A decision round: releases arrived jobs, runs the policy, persists, then sends commands.
    @discardableResult
    private func scheduleJobs(on router: ZMQSocket, now: Int64) -> Bool {
        let wall = clock.wallNanos()
        let actions = jobs.tick(wall: wall)
        guard !actions.isEmpty else { return false }
        do {
            try store.batch {
                try store.saveJobs(jobs.takeDirty())
                for a in actions {
                    var c = Command()
                    switch a {
                    case .startJob(let id, let p, let resume):
                        guard let spec = jobs.scheduler.state.jobs[id]?.spec else { continue }
                        var s = StartJob()
                        s.jobID = id; s.model = spec.kind.model; s.task = spec.kind.task; s.batchPerGpu = UInt32(spec.kind.batchPerGPU)
                        s.gpuModel = p.key.gpuModel; s.gpus = p.gpus.map(UInt32.init); s.totalWork = spec.work; s.resumeWork = resume
                        s.unit = spec.unit; s.timeScale = jobs.timeScale
                        c.startJob = s; c.nodeID = p.nodeID
                        let sent = try enqueue(c, now: now)
                        jobs.noteStartCommand(job: id, commandID: sent.commandID)
                        event(p.nodeID, "job_start", "\(id) on \(p.gpus.count)x\(p.key.gpuModel) resume \(resume)")
                    case .preemptJob(let id, let node, let reason):
                        var pj = PreemptJob(); pj.jobID = id
                        c.preemptJob = pj; c.nodeID = node
                        try enqueue(c, now: now)
                        event(node, "job_preempt", "\(id): \(reason)")
                    case .startReplica(let id, let service, let p):
                        var sr = StartReplica()
                        sr.replicaID = id; sr.serviceID = service; sr.model = p.key.model; sr.gpuModel = p.key.gpuModel
                        sr.gpus = p.gpus.map(UInt32.init); sr.batch = UInt32(jobs.scheduler.batchPerReplica[service] ?? 1)
                        sr.timeScale = jobs.timeScale
                        c.startReplica = sr; c.nodeID = p.nodeID
                        try enqueue(c, now: now)
                        if let rec = jobs.scheduler.state.replicas[id] { try store.saveReplica(rec, ready: false) }
                        event(p.nodeID, "replica_start", "\(id) of \(service) on \(p.gpus.count)x\(p.key.gpuModel)")
                    case .stopReplica(let id, let service, let node):
                        var sr = StopReplica(); sr.replicaID = id
                        c.stopReplica = sr; c.nodeID = node
                        try enqueue(c, now: now)
                        try store.deleteReplica(id)
                        dropServeCommands(replica: id)
                        event(node, "replica_stop", "\(id) of \(service)")
                    }
                }
                for id in jobs.takeLostReplicas() {
                    try store.deleteReplica(id)
                    dropServeCommands(replica: id)
                }
                try store.saveRequests(jobs.requests.takeDirty())
            }
        } catch {
            logger.error("could not persist scheduling decisions: \(error)")
        }
        return true
    }

    /// Requests queued for a replica that is gone go elsewhere (the router has them back already).
    private func dropServeCommands(replica: String) {
        outstanding.cancel { if case .serveRequests(let s)? = $0.action { return s.replicaID == replica }; return false }
    }

    /// Sends arrived requests to ready replicas. Not written to the command table: the requests
    /// table holds them, and after a coordinator restart every unfinished request is sent again.
    @discardableResult
    private func routeRequests(now: Int64) -> Bool {
        for id in jobs.takeLostReplicas() {
            do { try store.deleteReplica(id) } catch { logger.error("could not delete replica \(id): \(error)") }
            dropServeCommands(replica: id)
        }
        let routes = jobs.requests.route(now: jobs.traceNow(wall: clock.wallNanos()))
        guard !routes.isEmpty else { return false }
        do { try store.batch { try store.saveRequests(jobs.requests.takeDirty()) } } catch { logger.error("could not persist routed requests: \(error)") }
        for r in routes {
            var c = Command()
            var sr = ServeRequests()
            sr.replicaID = r.replica
            sr.requests = r.requests.map(\.message)
            c.serveRequests = sr
            c.nodeID = r.node
            do {
                c.commandID = try store.nextCommandID()
                outstanding.add(c, now: now)
            } catch {
                logger.error("could not reserve a command id: \(error)")
                jobs.requests.refused(r.requests.map(\.id), replica: r.replica)
            }
        }
        return true
    }

    private func resendCommands(on router: ZMQSocket, now: Int64) {
        let due = outstanding.due(now: now) { [membership, routes] in membership.isReachable($0) && routes[$0] != nil }
        for command in due {
            guard let identity = routes[command.nodeID] else { continue }
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
        if !jobs.dirtyJobs.isEmpty { try store.saveJobs(jobs.takeDirty()) }
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
        if turnOpen {
            afterCommit.append(DeferredReply(identity: identity, recipient: recipient, inReplyTo: inReplyTo, body: body))
            return
        }
        transmit(body, to: identity, recipient: recipient, inReplyTo: inReplyTo, on: router)
    }

    private func transmit(_ body: Envelope.OneOf_Body, to identity: [UInt8], recipient: String, inReplyTo: UInt64, on router: ZMQSocket) {
        var body = body
        // The agent's clock estimate takes t3 as the moment the ack leaves, not when it was built
        // (the turn's commit came in between).
        if case .heartbeatAck(var ack) = body { ack.sentAtUnixNanos = clock.wallNanos(); body = .heartbeatAck(ack) }
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

    private func count(_ name: String) {
        counters[name, default: 0] += 1
        countersDirty = true
    }

    private func event(_ nodeID: String, _ kind: String, _ detail: String) {
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
        for r in membership.nodes.values { byState[r.status.state, default: 0] += 1 }
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
        var phases: [String: Double] = ["pending": 0, "running": 0, "finished": 0, "future": Double(jobs.futureJobs.count)]
        for j in jobs.scheduler.state.jobs.values { phases[j.phase.rawValue, default: 0] += 1 }
        tracer.counter("jobs", phases, track: "workload")
    }

    /// Logs the first 20 of each kind of problem, then every 1000th, so a flood cannot fill disks.
    private func logLimited(_ kind: String, _ message: String) {
        let n = logBudget[kind, default: 0] + 1
        logBudget[kind] = n
        if n <= 20 || n % 1000 == 0 {
            logger.warning("\(message)", metadata: n > 20 ? ["occurrences": "\(n)"] : [:])
        }
    }
}
