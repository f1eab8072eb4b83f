import Foundation
import Logging
import Protocol
import Wire

/// Settings shared by every agent kind.
public struct AgentSessionConfig: Sendable {
    public var endpoint = "tcp://127.0.0.1:7700"
    /// `strato keys generate` directory; nil connects without CURVE.
    public var keysDirectory: String?
    /// Key pair file to use instead of the directory's agent.key (e.g. a node's own key).
    public var clientKeyFile: String?
    public var heartbeatIntervalMs: UInt32 = 200
    /// With no answer from the coordinator for this long, the agent assumes it lost the coordinator
    /// (or was paused) and registers again.
    public var coordinatorSilenceMs: Int64 = 2000
    public var registerRetryMs: Int64 = 500
    public var maxFrameBytes = EnvelopeCodec.defaultMaxFrameBytes
    /// Emulated conditions of the link to the coordinator (each direction); `.none`: the real link only.
    public var network = NetworkConditions.none
    /// JSON of `NetworkConditions` that replaces `network` while it exists (see `EmulatedNetwork`).
    public var networkControlFile: String?

    public init() {}
}

/// The agent side of the control plane for one or many nodes (virtual agents share one DEALER).
///
/// **Ownership:** `run()` owns the DEALER socket and all node state on the calling thread; `stop()`
/// may be called from any thread. The coordinator is authoritative: an agent that loses it keeps
/// retrying, and registers again with what it runs when it comes back.
public final class AgentSession: @unchecked Sendable {
    struct Node {
        var identity: AgentIdentity
        let behavior: AgentBehavior
        /// The node's features by wire name (commands and settled reports go to them).
        let handlers: [String: FeatureHandler]
        let instanceID: String
        var incarnation: UInt64 = 0
        var registered = false
        var lastAnswerMono: Int64 = 0
        var sequence: UInt64 = 0
        var lastHeartbeatSentWall: Int64 = 0
        var lastHeartbeatSequence: UInt64 = 0
        /// When this node's next heartbeat is scheduled (monotonic), while registered.
        var nextHeartbeatMono: Int64 = 0
        var estimator = ClockOffsetEstimator()
        var ledger = CommandLedger()
        var epoch: UInt64 = 0
        var drained = false
        var registerAttempts = 0
        /// Registers in a row the socket did not take: with ZMQ_IMMEDIATE it refuses a message
        /// until its connection to the coordinator is up, as right after this process started.
        var unsentRegisters = 0
        var lastRegisterProblem = ""
    }

    public let config: AgentSessionConfig
    private let clock: Clock
    private var logger: Logger
    private let codec: EnvelopeCodec
    private var nodes: [Node]
    private var index: [String: Int] = [:]
    private var timers = TimerHeap()
    private var nextMessageID: UInt64 = 0
    /// Whether the socket took the last message `send` was given.
    private var lastTransmitted = false
    private var sent: UInt64 = 0
    private var received: UInt64 = 0
    private var bytesSent: UInt64 = 0
    private var bytesReceived: UInt64 = 0
    private var heartbeatIntervalNanos: Int64
    private let stopLock = NSLock()
    private var stopRequested = false
    private var registeredCount = 0
    let network: EmulatedNetwork?

    /// `extraHandlers`: features the process adds to every node beside the node's own (the
    /// data plane of a single-node agent).
    public convenience init(config: AgentSessionConfig, nodes: [(AgentIdentity, AgentBehavior)], extraHandlers: [FeatureHandler] = [],
                            clock: Clock = SystemClock.shared, logger: Logger = Logger(label: "strato.agent")) {
        self.init(config: config, nodes: nodes, extraHandlers: extraHandlers, context: NodeContext(clock: clock, logger: logger))
    }

    public init(config: AgentSessionConfig, nodes: [(AgentIdentity, AgentBehavior)], extraHandlers: [FeatureHandler] = [],
                context: NodeContext) {
        self.config = config
        self.clock = context.clock
        self.logger = context.logger
        self.tracer = context.tracer
        self.codec = EnvelopeCodec(maxFrameBytes: config.maxFrameBytes)
        self.heartbeatIntervalNanos = .millis(Int64(config.heartbeatIntervalMs))
        self.nodes = nodes.map { identity, behavior in
            Node(identity: identity, behavior: behavior,
                 handlers: Dictionary((behavior.handlers + extraHandlers).map { ($0.feature, $0) }, uniquingKeysWith: { first, _ in first }),
                 instanceID: UUID().uuidString)
        }
        for (i, n) in self.nodes.enumerated() { index[n.identity.nodeID] = i }
        for n in self.nodes { for h in n.handlers.values { h.attach(context) } }
        self.network = EmulatedNetwork.make(config: config, clock: clock, logger: logger)
    }

    public func stop() { stopLock.lock(); stopRequested = true; stopLock.unlock() }
    private var shouldStop: Bool { stopLock.lock(); defer { stopLock.unlock() }; return stopRequested }

    /// Number of nodes currently registered (for progress lines and tests).
    public var registeredNodes: Int { registeredCount }

    public func run() throws {
        let context = ZMQContext()
        let dealer = try ZMQSocket(context, .dealer)
        defer { dealer.close(linger: 200); context.terminate() }
        try dealer.setHighWaterMarks(send: 100_000, receive: 100_000)
        try dealer.setOption(ZMQ_IMMEDIATE_OPTION, Int32(1))   // never queue for a dead connection
        try dealer.setOption(ZMQ_RECONNECT_IVL_MAX_OPTION, Int32(1000))
        if let dir = config.keysDirectory {
            let keys = KeyDirectory(path: dir)
            let pair = try config.clientKeyFile.map(KeyDirectory.readPair) ?? keys.agentKeys()
            try dealer.makeCurveClient(pair, serverPublicKey: try keys.coordinatorPublicKey())
        }
        try dealer.connect(config.endpoint)
        logger.info("agent connecting", metadata: ["endpoint": "\(config.endpoint)", "nodes": "\(nodes.count)",
                                                    "curve": "\(config.keysDirectory != nil)"])
        // Spread first registrations so thousands of virtual nodes do not arrive at once.
        let start = clock.monotonicNanos()
        let spread = nodes.count > 1 ? heartbeatIntervalNanos : 0
        for i in nodes.indices {
            timers.schedule(i, at: start + spread * Int64(i) / Int64(max(1, nodes.count)))
        }
        var lastSummary = start
        while !shouldStop {
            let now = clock.monotonicNanos()
            var due = timers.nextDue ?? now + .millis(50)
            for h in pumpedHandlers { if let d = h.nextPumpDue { due = min(due, d) } }
            let wait = max(1, min(50, (due - now) / 1_000_000))
            // The handlers' own sockets (data plane, streams) are polled with the DEALER.
            let extra = handlerSockets
            let ready = try ZMQPoller.readable([dealer] + extra, timeoutMs: network?.pollTimeoutMs(wait, now: now) ?? Int(wait))
            if !pumpedHandlers.isEmpty {
                let wall = clock.wallNanos()
                for h in pumpedHandlers { h.pump(wallNanos: wall) }
            }
            if ready[0] {
                for _ in 0..<4096 {
                    guard let frames = try dealer.receive(dontWait: true) else { break }
                    received += 1
                    for f in frames { bytesReceived += UInt64(f.count) }
                    if network?.takesIncoming(frames) != true { handle(frames, dealer) }
                }
            }
            network?.pump(dealer) { handle($0, dealer) }
            let t = clock.monotonicNanos()
            for i in timers.popDue(now: t) { act(on: i, dealer, now: t) }
            if tracer.isEnabled { traceTick(dealer, now: t) }
            if nodes.count > 16 && t - lastSummary > .millis(5000) {
                lastSummary = t
                logger.info("virtual agents", metadata: ["registered": "\(registeredCount)", "of": "\(nodes.count)"])
            }
        }
        for i in nodes.indices where nodes[i].registered {
            var d = Deregister()
            d.nodeID = nodes[i].identity.nodeID
            d.incarnation = nodes[i].incarnation
            d.reason = "agent shut down"
            send(.deregister(d), from: i, dealer)
        }
        for n in nodes {
            for h in n.handlers.values { h.shutdown() }
            n.behavior.shutdown()
        }
        if tracer.isEnabled { try? flushTrace(dealer) }
        network?.finish(dealer)
        logger.info("agent stopped")
    }

    // MARK: Timers

    private func act(on i: Int, _ dealer: ZMQSocket, now: Int64) {
        if nodes[i].registered && now - nodes[i].lastAnswerMono > .millis(config.coordinatorSilenceMs) {
            // Lost the coordinator, or this process was paused: its view of us is stale.
            setRegistered(i, false)
            logger.warning("no answer from the coordinator; registering again", metadata: [
                "node": "\(nodes[i].identity.nodeID)", "silence_ms": "\((now - nodes[i].lastAnswerMono) / 1_000_000)"])
        }
        if nodes[i].registered {
            sendHeartbeat(i, dealer)
            var next = now + heartbeatIntervalNanos
            // A job due to finish before then: report it as it happens (1 ms after, so it has).
            let wall = clock.wallNanos()
            if let due = nextReportDue(i, wallNanos: wall), due + .millis(1) - wall < heartbeatIntervalNanos {
                next = now + max(.millis(1), due + .millis(1) - wall)
            }
            nodes[i].nextHeartbeatMono = next
            timers.schedule(i, at: next)
        } else if !sendRegister(i, dealer) {
            // Not sent: the connection is still being made (a restarted agent's first register
            // went nowhere in half the runs and waited the full retry). Try again soon, doubling
            // from 5 ms.
            timers.schedule(i, at: now + .millis(5) << Int64(nodes[i].unsentRegisters - 1))
        } else {
            let backoff = min(Int64(4), Int64(1) << Int64(min(nodes[i].registerAttempts, 3)))
            timers.schedule(i, at: now + .millis(config.registerRetryMs) * backoff / 2)
        }
    }

    /// 5 + 10 + … + 1280 ms, 2.6 s in all: a connection to a coordinator that is up (or that
    /// starts just after its agents) is made long before, even on a loaded box.
    static let quickRegisterRetries = 9

    /// Sends a register and counts the attempt; false when the socket refused it and it is to be
    /// tried again soon, uncounted (past `quickRegisterRetries` refusals in a row, a coordinator
    /// that is not there, each counts and gets the usual backoff).
    private func sendRegister(_ i: Int, _ dealer: ZMQSocket) -> Bool {
        let n = nodes[i]
        var r = Register()
        r.nodeID = n.identity.nodeID
        r.kind = n.behavior.kind
        r.site = n.identity.site
        r.labels = n.identity.labels
        r.capabilities = n.behavior.capabilities()
        r.instanceID = n.instanceID
        r.lastIncarnation = n.incarnation
        r.running = running(i)
        for h in n.handlers.values {
            if let dp = h as? AdvertisesDataEndpoint { r.dataEndpoint = dp.dataEndpoint; r.dataPublicKey = dp.dataPublicKey ?? "" }
        }
        r.agentVersion = StratolabVersion.string
        r.host = ProcessStats.hostName
        r.pid = getpid()
        send(.register(r), from: i, dealer)
        if !lastTransmitted && nodes[i].unsentRegisters < Self.quickRegisterRetries {
            nodes[i].unsentRegisters += 1
            return false
        }
        if lastTransmitted { nodes[i].unsentRegisters = 0 }
        nodes[i].registerAttempts += 1
        if nodes[i].registerAttempts == 20 && nodes.count <= 16 {
            logger.warning("still not registered after 20 attempts; is the coordinator running at \(config.endpoint)? (with CURVE, are our keys authorised?)",
                           metadata: ["node": "\(n.identity.nodeID)"])
        }
        return true
    }

    private func sendHeartbeat(_ i: Int, _ dealer: ZMQSocket) {
        nodes[i].sequence += 1
        var hb = Heartbeat()
        hb.nodeID = nodes[i].identity.nodeID
        hb.incarnation = nodes[i].incarnation
        hb.sequence = nodes[i].sequence
        var t = Telemetry()
        let (cpu, rss) = processStats()
        t.processCpuSeconds = cpu
        t.processRssBytes = rss
        t.messagesSent = sent
        t.messagesReceived = received
        nodes[i].behavior.fillTelemetry(&t)
        hb.telemetry = t
        if let estimate = nodes[i].estimator.estimate { hb.clock = estimate }
        hb.running = running(i)
        let wall = clock.wallNanos()
        for h in nodes[i].handlers.values { hb.reports += h.reports(wallNanos: wall) }
        let sentAt = sendHeartbeat(hb, from: i, dealer)
        nodes[i].lastHeartbeatSentWall = sentAt
        nodes[i].lastHeartbeatSequence = hb.sequence
    }

    private var cachedStats: (cpu: Double, rss: UInt64, at: Int64)?

    /// This process's CPU and RSS, sampled at most every 100 ms: every virtual node of the process
    /// reports the same figures, and reading /proc per heartbeat would cost thousands of reads a second.
    private func processStats() -> (Double, UInt64) {
        let now = clock.monotonicNanos()
        if let c = cachedStats, now - c.at < .millis(100) { return (c.cpu, c.rss) }
        let fresh = (cpu: ProcessStats.cpuSeconds(), rss: ProcessStats.residentBytes(), at: now)
        cachedStats = fresh
        return (fresh.cpu, fresh.rss)
    }

    // MARK: Messages

    private func handle(_ frames: [[UInt8]], _ dealer: ZMQSocket) {
        guard frames.count == 1, let frame = try? frames[0].withUnsafeBytes({ try codec.decodeFrame($0) }) else {
            logger.warning("dropped an undecodable message from the coordinator")
            return
        }
        // Heartbeat acks, most of what comes in, are taken as header and body (no envelope built).
        let header = frame.header
        var ack: HeartbeatAckFrame?
        if case .heartbeatAck(let f) = frame { ack = f }
        let envelope = ack == nil ? frame.envelope : Envelope()
        let now = clock.monotonicNanos()
        let target = header.recipient
        guard let i = index[target] else { return }
        nodes[i].lastAnswerMono = now
        let flow = tracer.receivedFlow(header)
        let handledFrom = flow != 0 ? clock.wallNanos() : 0
        defer {
            if flow != 0 {
                let name = ack == nil ? envelope.bodyName : "heartbeat_ack"
                tracer.record(.flowIn, name, category: "message", track: "control", at: handledFrom, flow: flow)
                tracer.span("recv \(name)", category: "message", track: "control", start: handledFrom, end: clock.wallNanos(),
                            args: ["from": header.sender, "node": target])
            }
        }
        if let ack {
            handleHeartbeatAck(ack.ack, i, dealer)
            return
        }
        switch envelope.body {
        case .registerAck(let ack):
            let wasRegistered = nodes[i].registered
            let changed = ack.incarnation != nodes[i].incarnation
            nodes[i].incarnation = ack.incarnation
            nodes[i].epoch = ack.coordinatorEpoch
            nodes[i].registerAttempts = 0
            if ack.heartbeatIntervalMs > 0 { heartbeatIntervalNanos = .millis(Int64(ack.heartbeatIntervalMs)) }
            setRegistered(i, true)
            if nodes.count <= 16 && (!wasRegistered || changed) {
                logger.info("registered", metadata: ["node": "\(target)", "incarnation": "\(ack.incarnation)",
                                                     "coordinator_epoch": "\(ack.coordinatorEpoch)"])
            }
            nodes[i].nextHeartbeatMono = now + heartbeatIntervalNanos
            timers.schedule(i, at: now + heartbeatIntervalNanos)
        case .heartbeatAck(let ack):
            handleHeartbeatAck(ack, i, dealer)
        case .traceBatchAck(let ack):
            tracer.acknowledge(ack)
        case .command(let command):
            // Take the ledger out while executing: the action may change this node's state.
            var ledger = nodes[i].ledger
            let ack = ledger.handle(command, run: { self.execute($0, on: i) })
            nodes[i].ledger = ledger
            send(.commandAck(ack), from: i, dealer)
            // The command may make a report due sooner (requests just admitted): heartbeat then.
            if nodes[i].registered, let due = nextReportDue(i, wallNanos: clock.wallNanos()) {
                let at = now + max(.millis(1), due + .millis(1) - clock.wallNanos())
                if at < nodes[i].nextHeartbeatMono {
                    nodes[i].nextHeartbeatMono = at
                    timers.schedule(i, at: at)
                }
            }
        case .error(let err):
            switch err.code {
            case .notRegistered, .notBound:
                // NOT_BOUND: this process reconnected (a new connection) and must register again
                // from it; the coordinator's incarnation rules let the same process back in.
                if nodes[i].registered {
                    logger.notice("coordinator asks us to register again: \(err.message)", metadata: ["node": "\(target)"])
                }
                setRegistered(i, false)
                timers.schedule(i, at: now)
            case .nodeIDConflict, .invalidRegistration:
                if err.message != nodes[i].lastRegisterProblem {
                    logger.error("registration refused: \(err.message)", metadata: ["node": "\(target)"])
                    nodes[i].lastRegisterProblem = err.message
                }
                setRegistered(i, false)
                timers.schedule(i, at: now + .millis(err.code == .nodeIDConflict ? 1000 : 5000))
            default:
                logger.warning("coordinator reported an error: \(err.message)", metadata: ["node": "\(target)"])
            }
        default:
            logger.warning("unexpected '\(envelope.bodyName)' from the coordinator", metadata: ["node": "\(target)"])
        }
    }

    private func execute(_ command: Command, on i: Int) -> FeatureOutcome {
        switch command.action {
        case .ping(let p)?:
            return FeatureOutcome(ok: true, detail: "pong \(p.note)")
        case .setLabels(let s)?:
            for (k, v) in s.labels { nodes[i].identity.labels[k] = v.isEmpty ? nil : v }
            return FeatureOutcome(ok: true, detail: "labels: " + nodes[i].identity.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","))
        case .drain(let d)?:
            nodes[i].drained = d.drain
            return FeatureOutcome(ok: true, detail: d.drain ? "draining" : "accepting work")
        case .feature(let f)?:
            guard let handler = nodes[i].handlers[f.feature] else {
                let offered = nodes[i].handlers.keys.sorted()
                return .refused("this \(nodes[i].behavior.kind.name) node does not offer feature '\(f.feature)' (it offers: \(offered.isEmpty ? "none" : offered.joined(separator: ", ")))")
            }
            return handler.execute(Array(f.body), commandID: command.commandID, wallNanos: clock.wallNanos())
        case nil:
            return .refused("the command has no action this agent understands (a newer protocol?)")
        }
    }

    /// What the node runs: its own work and every feature's.
    private func running(_ i: Int) -> [String] {
        var all = nodes[i].behavior.running()
        for h in nodes[i].handlers.values { all += h.running() }
        return Array(Set(all)).sorted()
    }

    private func nextReportDue(_ i: Int, wallNanos: Int64) -> Int64? {
        nodes[i].handlers.values.compactMap { $0.nextReportDue(wallNanos: wallNanos) }.min()
    }

    /// Handlers pumped every loop turn (those that own sockets or timed work), found once (their
    /// socket lists may grow, e.g. a data plane's peer connections, so those are asked each turn):
    /// thousands of virtual nodes' handlers without either cost nothing per loop turn.
    private lazy var pumpedHandlers: [FeatureHandler] = {
        // A handler shared by many nodes (a process-wide data plane, a fleet of virtual players)
        // is pumped once per turn, not once per node.
        var seen = Set<ObjectIdentifier>()
        return nodes.flatMap { $0.handlers.values.filter(\.isPumped) }.filter { seen.insert(ObjectIdentifier($0)).inserted }
    }()

    private var handlerSockets: [ZMQSocket] { pumpedHandlers.flatMap(\.sockets) }


    private func handleHeartbeatAck(_ ack: HeartbeatAck, _ i: Int, _ dealer: ZMQSocket) {
        for settled in ack.settled where !settled.keys.isEmpty { nodes[i].handlers[settled.feature]?.settle(settled.keys) }
        if ack.sequence == nodes[i].lastHeartbeatSequence {
            nodes[i].estimator.add(ClockSample(t1: nodes[i].lastHeartbeatSentWall, t2: ack.receivedAtUnixNanos,
                                               t3: ack.sentAtUnixNanos, t4: clock.wallNanos()))
        }
        if nodes[i].registered && ack.coordinatorEpoch != nodes[i].epoch {
            // The coordinator restarted: tell the new one what we run.
            logger.info("coordinator restarted; reconciling", metadata: ["node": "\(nodes[i].identity.nodeID)", "epoch": "\(ack.coordinatorEpoch)"])
            nodes[i].epoch = ack.coordinatorEpoch
            sendRegister(i, dealer)
        }
    }

    /// A heartbeat, encoded from header and body (no envelope built: the message sent most).
    private func sendHeartbeat(_ hb: Heartbeat, from i: Int, _ dealer: ZMQSocket) -> Int64 {
        nextMessageID += 1
        let now = clock.wallNanos()
        var header = EnvelopeHeader(messageID: nextMessageID, sender: nodes[i].identity.nodeID, sentAtUnixNanos: now)
        let body = HotBody.heartbeat(hb)
        let flow = tracer.tracesMessage(header, body) ? tracer.markTraced(&header) : 0
        if network == nil {
            // Lent straight to the socket; the emulated network below holds a copy.
            var ok = false, size = 0
            codec.withEncoded(header, body) { f in size = f.count; ok = (try? dealer.send(buffers: [f], dontWait: true)) == true }
            if ok { sent += 1; bytesSent += UInt64(size) }
        } else {
            let frame = codec.encode(header, body)
            if transmit(frame, dealer) { sent += 1; bytesSent += UInt64(frame.count) }
        }
        if flow != 0 {
            tracer.span("send heartbeat", category: "message", track: "control", start: now, end: clock.wallNanos(),
                        args: ["to": "coordinator", "node": header.sender])
            tracer.record(.flowOut, "heartbeat", category: "message", track: "control", at: now, flow: flow)
        }
        return now
    }

    @discardableResult
    private func send(_ body: Envelope.OneOf_Body, from i: Int, _ dealer: ZMQSocket) -> Int64 {
        nextMessageID += 1
        let now = clock.wallNanos()
        var e = Envelope.make(sender: nodes[i].identity.nodeID, messageID: nextMessageID, sentAtNanos: now, body: body)
        let flow = tracer.tracesMessage(e) ? tracer.markTraced(&e) : 0
        let frame = codec.encode(e)
        lastTransmitted = transmit(frame, dealer)
        if lastTransmitted { sent += 1; bytesSent += UInt64(frame.count) }
        if flow != 0 && lastTransmitted {   // a message the socket refused is not drawn as sent
            tracer.span("send \(e.bodyName)", category: "message", track: "control", start: now, end: clock.wallNanos(),
                        args: ["to": "coordinator", "node": e.sender])
            tracer.record(.flowOut, e.bodyName, category: "message", track: "control", at: now, flow: flow)
        }
        return now
    }

    private func setRegistered(_ i: Int, _ value: Bool) {
        if nodes[i].registered != value {
            registeredCount += value ? 1 : -1
            tracer.instant(value ? "registered" : "lost coordinator", category: "membership", track: "control",
                           args: ["node": nodes[i].identity.nodeID, "incarnation": "\(nodes[i].incarnation)"])
        }
        nodes[i].registered = value
    }

    // MARK: Tracing

    /// This session's trace recorder (from its context).
    public let tracer: Tracer
    private var lastTraceShip: Int64 = 0
    private var lastTraceCounters: Int64 = 0
    private var lastCounterCPU: (cpu: Double, at: Int64)?

    /// Every 250 ms ships a batch of trace events to the collector (through node 0's identity);
    /// every second records this process's counters.
    private func traceTick(_ dealer: ZMQSocket, now: Int64) {
        if now - lastTraceCounters >= .millis(1000) {
            lastTraceCounters = now
            recordCounters(now: now)
        }
        guard now - lastTraceShip >= .millis(250), !nodes.isEmpty else { return }
        lastTraceShip = now
        while let batch = tracer.takeBatch(nowMono: now, clock: nodes[0].estimator.estimate) {
            send(.traceBatch(batch), from: 0, dealer)
            if tracer.unacknowledged == 0 || batch.events.count < 2000 { break }
        }
    }

    private func recordCounters(now: Int64) {
        let (cpu, rss) = processStats()
        var values: [String: Double] = ["rss_mb": Double(rss) / 1_048_576, "messages_sent": Double(sent),
                                        "messages_received": Double(received), "nodes_registered": Double(registeredCount),
                                        "bytes_sent": Double(bytesSent), "bytes_received": Double(bytesReceived)]
        if let last = lastCounterCPU, now > last.at { values["cpu_percent"] = (cpu - last.cpu) / (Double(now - last.at) / 1e9) * 100 }
        lastCounterCPU = (cpu, now)
        tracer.counter("process", values)
        // Workload counters per node (skipped for large virtual fleets: one process, thousands of nodes).
        guard nodes.count <= 16 else { return }
        for n in nodes {
            var t = Telemetry()
            n.behavior.fillTelemetry(&t)
            var w: [String: Double] = [:]
            if !t.gpus.isEmpty {
                w["gpu_utilization"] = t.gpus.map(\.utilization).reduce(0, +) / Double(t.gpus.count)
                w["gpu_memory_gib"] = Double(t.gpus.map(\.memoryUsedBytes).reduce(0, +)) / 1_073_741_824
                w["jobs_running"] = Double(n.handlers["jobs"]?.running().count ?? 0)
            }
            for tier in t.tiers { w["\(tier.kind.name)_used_mib"] = Double(tier.usedBytes) / 1_048_576 }
            if n.behavior.kind == .render { w["render_slots_used"] = Double(t.renderSlotsUsed) }
            if !w.isEmpty { tracer.counter(n.identity.nodeID, w, track: "workload") }
        }
    }

    /// At shutdown: ships what is left and waits briefly for the acknowledgement (the spool keeps
    /// it either way).
    private func flushTrace(_ dealer: ZMQSocket) throws {
        let deadline = clock.monotonicNanos() + .millis(500)
        var shipped = false
        while clock.monotonicNanos() < deadline {
            if !shipped || tracer.unacknowledged > 0 {
                if let b = tracer.takeBatch(nowMono: clock.monotonicNanos(), clock: nodes.first?.estimator.estimate, resendAfterNanos: .millis(200)) {
                    send(.traceBatch(b), from: 0, dealer)
                }
                shipped = true
            }
            if tracer.unacknowledged == 0 { return }
            if try ZMQPoller.readable([dealer], timeoutMs: 20)[0], let frames = try dealer.receive(dontWait: true) {
                if network?.takesIncoming(frames) != true { handle(frames, dealer) }
            }
            network?.pump(dealer) { handle($0, dealer) }
        }
    }
}
