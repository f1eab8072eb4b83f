import Cluster
import DataPlane
import Foundation
import Logging
import Protocol
import Scheduling

/// Feature "migration", agent side, on a GPU node: moves running inference requests between this
/// node's replicas (`EmulatedReplicas`) and other nodes' over the data plane, with their KV blocks
/// as real bytes. As a source it runs `MigrationSource` for each `MigrateRequest`; as a destination
/// it takes "kv-migration" transfers (`DataPlaneReceiver`) and runs `MigrationDestination`. It
/// reports each side's outcome until settled, and each replica's load for the coordinator's
/// policy. See migration.proto for the transfers' phases.
///
/// Called on the agent session's thread (the data plane is pumped there too).
public final class MigrationHandler: FeatureHandler, DataPlaneReceiver {
    public static let feature = "migration"
    public static let transferKind = "kv-migration"
    public var feature: String { MigrationHandler.feature }

    let replicas: EmulatedReplicas
    let plane: DataPlane
    private var clock: Clock = SystemClock.shared
    private var tracer = Tracer()
    private var logger = Logger(label: "strato.migration")
    /// Silence from a source, between transfers, after which a destination asks the coordinator.
    public var sourceSilenceNanos: Int64 = 10_000_000_000
    /// Load reports per replica at most this often.
    public var loadReportNanos: Int64 = 200_000_000
    /// A memory host to stage a request's KV on when its destination has no room (the tiers
    /// feature on this node; nil: a full destination ends the migration).
    public var staging: KVStaging?

    /// One migration this node is the source of.
    final class Outgoing {
        let command: MigrateRequest
        var machine: MigrationSource
        let peer: PeerAddress
        let startedWall: Int64
        var transfer: UInt64?
        var kept: ServingEngine.SequenceState?
        var finalDueWall: Int64?
        var bytes = 0, blocks = 0
        var copyNanos: Int64 = 0
        var tokens = 0
        var highPriority = false
        var flows: UInt64 = 0
        /// Where its KV was staged (the destination had no room).
        var staged: StagedKV?
        init(command: MigrateRequest, machine: MigrationSource, peer: PeerAddress, startedWall: Int64) {
            self.command = command; self.machine = machine; self.peer = peer; self.startedWall = startedWall
        }
    }
    /// One migration this node is the destination of.
    final class Incoming {
        let id: String, request: String, replica: String, sourceNode: String
        var machine: MigrationDestination
        var state: MigratingRequest
        var lastHeard: Int64
        let startedWall: Int64
        var bytes = 0
        /// Bytes of the transfer in progress consumed so far (every one verified).
        var transferBytes = 0
        var committedWall: Int64?
        /// Resumed from a partial copy after its source went silent.
        var partial = false
        /// Taken on with its KV staged on a memory host.
        var staged: StagedKV?
        init(id: String, request: String, replica: String, sourceNode: String, machine: MigrationDestination, state: MigratingRequest, now: Int64, wall: Int64) {
            self.id = id; self.request = request; self.replica = replica; self.sourceNode = sourceNode
            self.machine = machine; self.state = state; self.lastHeard = now; self.startedWall = wall
        }
    }
    private struct InboundTransfer {
        let migration: String; let phase: String; let firstBlock: Int; let blocks: Int; let state: MigratingRequest?; let flow: UInt64
        /// When its offer arrived, and the least time the emulated KV link takes for it (monotonic nanos).
        let offered: Int64; let paceNanos: Int64
    }

    private var outgoing: [String: Outgoing] = [:]
    private var incoming: [String: Incoming] = [:]
    private var inbound: [String: InboundTransfer] = [:]   // by "sender/transfer"
    /// Outcomes repeated until the coordinator settles them.
    private var outcomes: [String: MigrationReport] = [:]
    /// Migrations this node finished either side of (a re-sent command is not run twice).
    private var finished = Set<String>()
    private var loadSentAt: [String: (at: Int64, load: InstanceLoadReport)] = [:]
    /// Transfers that finished before the emulated KV link would have carried their blocks'
    /// real size: their outcome is handed on when due (monotonic nanos).
    private var paced: [(due: Int64, deliver: () -> Void)] = []
    /// Problems counted by name (unknown migrations, rejected blocks, ...), also logged.
    public private(set) var problems: [String: Int] = [:]

    public init(replicas: EmulatedReplicas, plane: DataPlane) {
        self.replicas = replicas
        self.plane = plane
        plane.register(self, forKind: MigrationHandler.transferKind)
    }

    public func attach(_ context: NodeContext) {
        clock = context.clock
        tracer = context.tracer
        logger = context.logger
    }

    public var inFlight: (outgoing: Int, incoming: Int) { (outgoing.count, incoming.values.filter { $0.machine.phase == .receiving || $0.machine.phase == .orphaned }.count) }

    private func problem(_ kind: String, _ message: String) {
        problems[kind, default: 0] += 1
        if problems[kind]! <= 5 || problems[kind]! % 1000 == 0 { logger.warning("migration: \(message)", metadata: ["kind": "\(kind)", "count": "\(problems[kind]!)"]) }
    }

    private var seconds: Double { Double(clock.monotonicNanos()) / 1e9 }

    // MARK: Commands

    public func execute(_ body: [UInt8], commandID: UInt64, wallNanos: Int64) -> FeatureOutcome {
        guard let command = try? MigrationCommand(serializedBytes: body) else { return .refused("not a MigrationCommand") }
        switch command.action {
        case .migrate(let m)?: return start(m, wallNanos: wallNanos)
        case .resolve(let r)?: return resolve(r, wallNanos: wallNanos)
        case nil: return .refused("a MigrationCommand with no action")
        }
    }

    private func start(_ m: MigrateRequest, wallNanos: Int64) -> FeatureOutcome {
        if outgoing[m.migrationID] != nil || finished.contains(m.migrationID) { return FeatureOutcome(ok: true, detail: "migration \(m.migrationID) already under way") }
        guard let method = MigrationMethod(rawValue: m.method) else { return .refused("unknown method '\(m.method)' (live, blocking or recompute)") }
        guard replicas.serves(m.sourceReplica) else { return .refused("replica \(m.sourceReplica) is not serving on this node") }
        replicas.step(m.sourceReplica, wallNanos: wallNanos)
        guard let t = replicas.tokens(of: m.requestID, in: m.sourceReplica) else {
            return .refused("request \(m.requestID) is not on replica \(m.sourceReplica) (finished, or never here)")
        }
        guard !m.destinationEndpoint.isEmpty else { return .refused("node \(m.destinationNode) has no data plane") }
        guard let bb = replicas.blockBytes(of: m.sourceReplica), let tc = replicas.clock(of: m.sourceReplica) else { return .refused("replica \(m.sourceReplica) is gone") }
        // The copy runs on the wall clock; the budget is trace time (what the request sees).
        var plan = MigrationPlan(method: method, blockBytes: Double(max(1, bb.held)),
                                 bandwidthBytesPerSecond: m.bandwidthBytesPerSecond > 0 ? m.bandwidthBytesPerSecond : 1e9)
        plan.downtimeBudget = (m.downtimeBudgetSeconds > 0 ? m.downtimeBudgetSeconds : 0.02) / tc.timeScale
        if m.stageCap > 0 { plan.stageCap = Int(m.stageCap) }
        plan.staging = m.stageViaMemoryHost && staging?.canStage == true
        // Room for the KV it has and a block to grow into; later stages extend the reservation.
        let total = (t.prompt + t.generated + replicas.blockTokens - 1) / replicas.blockTokens + 1
        let (machine, first) = MigrationSource.start(request: m.requestID, plan: plan, totalBlocks: total, at: seconds)
        let o = Outgoing(command: m, machine: machine,
                         peer: PeerAddress(endpoint: m.destinationEndpoint, publicKey: m.destinationPublicKey.isEmpty ? nil : m.destinationPublicKey),
                         startedWall: wallNanos)
        o.tokens = t.prompt + t.generated
        o.highPriority = replicas.isHighPriority(m.requestID)
        outgoing[m.migrationID] = o
        tracer.instant("migrate \(m.requestID)", category: "migration", track: "migrations",
                       args: ["migration": m.migrationID, "to": m.destinationNode, "method": m.method, "reason": m.reason, "tokens": "\(o.tokens)"])
        run(o, first)
        return FeatureOutcome(ok: true, detail: "migration \(m.migrationID): \(m.requestID) to \(m.destinationNode) (\(m.method))")
    }

    /// Carries out a source machine's directives (and those they lead to).
    private func run(_ o: Outgoing, _ directives: [MigrationSource.Directive]) {
        var queue = directives
        let id = o.command.migrationID, request = o.command.requestID, replica = o.command.sourceReplica
        while !queue.isEmpty {
            let d = queue.removeFirst()
            switch d {
            case .reserve(let n):
                send(o, phase: "reserve", blocks: 0..<0, extra: ["blocks": "\(n)"]) { [weak self] result in
                    guard let self else { return }
                    switch result {
                    case .success:
                        self.run(o, o.machine.reserved(true, computed: self.computedBlocks(o), at: self.seconds))
                    case .failure(.refused(let why)):
                        self.run(o, o.machine.reserved(false, reason: why, computed: 0, at: self.seconds))
                    case .failure(let e):
                        self.run(o, o.machine.destinationFailed("\(e)"))
                    }
                }
            case .copy(let stage, let range):
                replicas.hold(request, blocks: range.upperBound, in: replica)
                send(o, phase: "stage", blocks: range, extra: ["stage": "\(stage)"]) { [weak self] result in
                    guard let self else { return }
                    switch result {
                    case .success:
                        o.blocks += range.count
                        if let ended = self.ended(o) { self.run(o, o.machine.requestEnded(preempted: ended)); return }
                        self.run(o, o.machine.stageCopied(computed: self.computedBlocks(o), at: self.seconds))
                    case .failure(let e):
                        if let ended = self.ended(o) { self.run(o, o.machine.requestEnded(preempted: ended)); return }
                        self.run(o, o.machine.destinationFailed("\(e)"))
                    }
                }
            case .suspend:
                let wall = clock.wallNanos()
                guard let st = replicas.takeOut(request, from: replica, wallNanos: wall), let tc = replicas.clock(of: replica) else {
                    queue += o.machine.requestEnded(preempted: false)
                    continue
                }
                o.kept = st
                // The step in flight computes its token's KV: the final copy starts when it ends.
                o.finalDueWall = max(wall, st.lastToken.map { tc.wall(trace: $0) } ?? wall)
                tracer.instant("suspend \(request)", category: "migration", track: "migrations", args: ["migration": id, "generated": "\(st.generated)"])
                if o.finalDueWall! <= wall { queue += finalStage(o) }
            case .copyFinal(let range):
                send(o, phase: "final", blocks: range, extra: [:]) { [weak self] result in
                    guard let self else { return }
                    switch result {
                    case .success:
                        o.blocks += range.count
                        self.run(o, o.machine.finalDelivered(at: self.seconds) + o.machine.committed(at: self.seconds))
                    case .failure(let e):
                        self.run(o, o.machine.destinationFailed("\(e)"))
                    }
                }
            case .stageOut(let range):
                stageOut(o, blocks: range)
            case .handOver:
                guard let staged = o.staged else { queue += o.machine.destinationFailed("nothing was staged"); continue }
                send(o, phase: "staged", blocks: 0..<0, extra: staged.meta) { [weak self] result in
                    guard let self else { return }
                    switch result {
                    case .success: self.run(o, o.machine.committed(at: self.seconds))
                    case .failure(.refused(let why)): self.run(o, o.machine.destinationFailed("it refused the staged request: \(why)"))
                    case .failure(let e): self.run(o, o.machine.destinationFailed("\(e)"))
                    }
                }
            case .dropStaged:
                if let staged = o.staged { staging?.discard(staged, stateOnly: false) }
            case .free:
                replicas.free(request, from: replica)
            case .resumeHere:
                if let st = o.kept {
                    replicas.resume(st, highPriority: o.highPriority, reserved: 0, kvBlocks: (st.computed + replicas.blockTokens - 1) / replicas.blockTokens,
                                    in: replica, wallNanos: clock.wallNanos())
                }
            case .abortDestination(let why):
                if let t = o.transfer { plane.cancel(t, reason: "\(why)") }
                send(o, phase: "abort", blocks: 0..<0, extra: ["why": "\(why)"]) { _ in }
            case .report(let phase):
                if o.kept == nil { replicas.hold(request, blocks: nil, in: replica) }
                finish(o, phase)
            }
        }
    }

    /// Staging: puts the suspended request's KV on a memory host; the destination hears of it once
    /// the put is done and its modelled time (the real bytes over the tier and the link) is up.
    private func stageOut(_ o: Outgoing, blocks range: Range<Int>) {
        let c = o.command
        guard let staging else { run(o, o.machine.stagedOut(false, reason: "no memory host on this node", at: seconds)); return }
        let bytes: [[UInt8]]
        do { bytes = try replicas.blockBytes(c.requestID, count: range.upperBound, in: c.sourceReplica) } catch {
            run(o, o.machine.stagedOut(false, reason: "\(error)", at: seconds)); return
        }
        let started = clock.monotonicNanos(), startWall = clock.wallNanos()
        let scale = replicas.clock(of: c.sourceReplica)?.timeScale ?? 1
        tracer.instant("stage \(c.requestID)", category: "migration", track: "migrations", args: ["migration": c.migrationID, "blocks": "\(range.count)"])
        let state: [UInt8] = self.state(o).flatMap { try? $0.serializedBytes() } ?? []
        staging.stage(keyPrefix: MigrationHandler.stagePrefix(c.migrationID), request: c.requestID, replica: c.sourceReplica, blocks: bytes, state: state) { [weak self] result in
            guard let self else { return }
            switch result {
            case .success(let staged):
                o.staged = staged
                o.blocks += staged.blocks
                o.bytes += bytes.reduce(0) { $0 + $1.count }
                let end = self.clock.monotonicNanos()
                o.copyNanos += end - started
                self.tracer.span("kv staged on \(staged.host)", category: "migration", track: "migrations", start: startWall, end: startWall + (end - started),
                                 args: ["migration": c.migrationID, "blocks": "\(staged.blocks)", "tier": staged.tier, "modelled_s": String(format: "%.4f", staged.seconds)])
                let due = started + Int64(staged.seconds / scale * 1e9)
                let go = { [weak self] in guard let self else { return }; self.run(o, o.machine.stagedOut(true, blocks: staged.blocks, at: self.seconds)) }
                if due > end { self.paced.append((due, go)) } else { go() }
            case .failure(let e):
                self.problem("staging_failed", "migration \(c.migrationID): \(e)")
                self.run(o, o.machine.stagedOut(false, reason: "\(e)", at: self.seconds))
            }
        }
    }

    /// The suspended request's last step is over: send the rest and its state.
    private func finalStage(_ o: Outgoing) -> [MigrationSource.Directive] {
        guard let st = o.kept else { return [] }
        o.finalDueWall = nil
        return o.machine.suspended(computed: (st.computed + replicas.blockTokens - 1) / replicas.blockTokens, at: seconds)
    }

    private func computedBlocks(_ o: Outgoing) -> Int {
        replicas.step(o.command.sourceReplica, wallNanos: clock.wallNanos())
        return replicas.completeBlocks(of: o.command.requestID, in: o.command.sourceReplica) ?? 0
    }

    /// Whether the request stopped running on the source: nil while it runs, true when preempted
    /// (back in a queue), false when finished or gone.
    private func ended(_ o: Outgoing) -> Bool? {
        guard o.kept == nil else { return nil }
        replicas.step(o.command.sourceReplica, wallNanos: clock.wallNanos())
        switch replicas.place(of: o.command.requestID, in: o.command.sourceReplica) {
        case .running?: return nil
        case nil: return false
        default: return true
        }
    }

    /// Sends one transfer of a migration: blocks `range` of the request from the pool, with the
    /// request's state (the latest the source has) so the destination can resume it.
    private func send(_ o: Outgoing, phase: String, blocks range: Range<Int>, extra: [String: String], done: @escaping (Result<Int, DataPlaneError>) -> Void) {
        let c = o.command
        var meta = extra
        meta["migration"] = c.migrationID; meta["request"] = c.requestID; meta["replica"] = c.destinationReplica; meta["phase"] = phase
        meta["first_block"] = "\(range.lowerBound)"
        meta["state"] = state(o).flatMap { try? $0.serializedData().base64EncodedString() } ?? ""
        let blockBytes = replicas.blockBytes(of: c.sourceReplica)?.held ?? 0
        let started = clock.monotonicNanos(), startWall = clock.wallNanos()
        o.flows += 1
        let flow = Tracer.flowID(sender: c.migrationID, messageID: o.flows)
        meta["flow"] = "\(flow)"
        tracer.record(.flowOut, "kv \(phase)", category: "migration", track: "migrations", at: startWall, flow: flow)
        let replica = c.sourceReplica, request = c.requestID
        // The real-size blocks on the emulated KV link take this long at least (wall nanos, at the
        // replica's time scale); both ends hold the outcome until then.
        var paceNanos: Int64 = 0
        if c.kvLinkBytesPerSecond > 0, let full = replicas.blockBytes(of: replica)?.full, let scale = replicas.clock(of: replica)?.timeScale {
            paceNanos = Int64(Double(range.count) * full / c.kvLinkBytesPerSecond / scale * 1e9)
            meta["pace_ns"] = "\(paceNanos)"
        }
        do {
            o.transfer = try plane.send(to: o.peer, kind: MigrationHandler.transferKind, meta: meta, totalBytes: range.count * blockBytes,
                                        source: { [weak self] offset, length, emit in
                                            guard let self else { throw KVBlockPool.PoolError("the migration handler is gone") }
                                            try self.replicas.read(request, blocks: range, offset: offset, length: length, in: replica, into: emit)
                                        },
                                        done: { [weak self] result in
                                            guard let self else { return }
                                            if case .success = result, started + paceNanos > self.clock.monotonicNanos() {
                                                self.paced.append((started + paceNanos, { self.completed(o, phase: phase, range: range, blockBytes: blockBytes, started: started, startWall: startWall, result: result, done: done) }))
                                                return
                                            }
                                            self.completed(o, phase: phase, range: range, blockBytes: blockBytes, started: started, startWall: startWall, result: result, done: done)
                                        })
        } catch {
            done(.failure(.cancelled("could not reach the destination's data plane: \(error)")))
        }
    }

    /// A transfer of a migration is over (and, with an emulated KV link, its time is up).
    private func completed(_ o: Outgoing, phase: String, range: Range<Int>, blockBytes: Int, started: Int64, startWall: Int64,
                           result: Result<Int, DataPlaneError>, done: (Result<Int, DataPlaneError>) -> Void) {
        o.transfer = nil
        let end = clock.monotonicNanos()
        o.copyNanos += end - started
        if case .success(let n) = result { o.bytes += n }
        tracer.span("kv \(phase)" + (phase == "stage" ? " \(o.machine.stages)" : ""), category: "migration", track: "migrations",
                    start: startWall, end: startWall + (end - started),
                    args: ["migration": o.command.migrationID, "blocks": "\(range.count)", "bytes": "\(range.count * blockBytes)",
                           "result": { if case .failure(let e) = result { return "\(e)" }; return "ok" }()])
        done(result)
    }

    /// The request's state as the source has it now (taken out, or still running).
    private func state(_ o: Outgoing) -> MigratingRequest? {
        let replica = o.command.sourceReplica
        guard let tc = replicas.clock(of: replica) else { return nil }
        let st: ServingEngine.SequenceState? = o.kept ?? {
            replicas.step(replica, wallNanos: clock.wallNanos())
            return replicas.peek(o.command.requestID, in: replica)
        }()
        guard let st else { return nil }
        return MigrationHandler.encode(st, clock: tc, highPriority: o.highPriority)
    }

    private func finish(_ o: Outgoing, _ phase: MigrationSource.Phase) {
        let c = o.command
        outgoing[c.migrationID] = nil
        finished.insert(c.migrationID)
        var r = MigrationReport()
        r.migrationID = c.migrationID; r.requestID = c.requestID; r.role = .source
        switch phase {
        case .done:
            r.outcome = "done"
            if let s = o.staged { r.detail = "staged on memory host \(s.host) (\(s.tier)): the destination had no room" }
        case .aborted(let a):
            if case .destinationFailed = a, o.kept != nil { r.outcome = "resumed-here" } else { r.outcome = "aborted" }
            r.detail = "\(a)"
        default: r.outcome = "\(phase)"
        }
        r.stages = UInt32(o.machine.stages); r.bytes = UInt64(o.bytes); r.blocks = UInt32(o.blocks); r.tokens = UInt32(o.tokens)
        r.copySeconds = Double(o.copyNanos) / 1e9
        r.downtimeSeconds = -1
        r.startedUnixNanos = o.startedWall; r.endedUnixNanos = clock.wallNanos()
        r.kvBytesScale = replicas.blockBytes(of: c.sourceReplica)?.scale ?? 0
        r.measuredBytesPerSecond = o.machine.measuredBandwidth ?? (o.copyNanos > 0 ? Double(o.bytes) / (Double(o.copyNanos) / 1e9) : 0)
        r.staged = o.staged != nil && phase == .done
        outcomes["\(c.migrationID)/source"] = r
        tracer.instant("migration \(r.outcome)", category: "migration", track: "migrations",
                       args: ["migration": c.migrationID, "request": c.requestID, "stages": "\(r.stages)", "bytes": "\(r.bytes)", "detail": r.detail])
    }

    // MARK: Destination

    public func shouldAccept(from sender: String, transfer: UInt64, offer: TransferOffer) -> String? {
        let m = offer.meta
        guard let id = m["migration"], let request = m["request"], let replica = m["replica"], let phase = m["phase"],
              let first = m["first_block"].flatMap(Int.init) else {
            problem("malformed_offer", "an offer from \(sender) without migration, request, replica, phase and first_block")
            return "a kv-migration offer needs migration, request, replica, phase and first_block"
        }
        let state = m["state"].flatMap { Data(base64Encoded: $0) }.flatMap { try? MigratingRequest(serializedBytes: $0) }
        let now = clock.monotonicNanos()
        switch phase {
        case "reserve":
            if let i = incoming[id] { i.lastHeard = now; return i.machine.phase == .receiving ? nil : "migration \(id) is \(i.machine.phase) here" }
            if finished.contains(id) { return "migration \(id) already ended here" }
            guard let blocks = m["blocks"].flatMap(Int.init), blocks > 0, let state else { return "a reserve offer needs blocks > 0 and the request's state" }
            if let why = replicas.reserve(blocks, for: request, in: replica) { return why }
            guard case .success(let machine) = MigrationDestination.reserve(request: request, blocks: blocks, free: blocks) else { return "impossible" }
            incoming[id] = Incoming(id: id, request: request, replica: replica, sourceNode: sender, machine: machine, state: state, now: now, wall: clock.wallNanos())
            return nil
        case "staged":
            return adoptStaged(id: id, request: request, replica: replica, sender: sender, meta: m, state: state, now: now)
        case "stage", "final", "abort":
            // The source's abort for a move this side already released (it refused a stage as the
            // request ended on the source): nothing is left to do, and nothing is wrong.
            if phase == "abort" && incoming[id] == nil && finished.contains(id) { return nil }
            guard let i = incoming[id] else {
                problem("unknown_migration", "\(phase) of \(request) from \(sender) for migration \(id), which is not in progress here (aborted or unknown)")
                return "migration \(id) is not in progress on this node (aborted or unknown)"
            }
            guard i.sourceNode == sender else {
                problem("wrong_sender", "blocks for migration \(id) from \(sender); it comes from \(i.sourceNode)")
                return "migration \(id) comes from \(i.sourceNode), not \(sender)"
            }
            i.lastHeard = now
            if phase == "abort" {
                if i.machine.phase == .receiving || i.machine.phase == .orphaned { release(i, outcome: "released", detail: m["why"] ?? "the source aborted") }
                return nil
            }
            guard i.machine.phase == .receiving else { return "migration \(id) is \(i.machine.phase) here" }
            // The source takes any refusal of a stage as the destination failing and ends the move
            // without a word more, so a refusing destination drops its side at once: held, its
            // reservation stayed out of the pool until the source's silence timed out (10 s). A
            // stage from before what arrived is only a late duplicate: refused, the move goes on.
            guard first == i.machine.received else {
                problem("out_of_order", "blocks from \(first) for migration \(id); \(i.machine.received) arrived so far")
                let why = "blocks from \(first) for migration \(id) out of order: \(i.machine.received) arrived so far"
                if first > i.machine.received { release(i, outcome: "released", detail: why) }
                return why
            }
            let blockBytes = replicas.blockBytes(of: replica)?.held ?? 0
            let blocks = blockBytes > 0 ? Int(offer.totalBytes) / blockBytes : 0
            guard blockBytes == 0 || Int(offer.totalBytes) % blockBytes == 0 else {
                problem("bad_size", "\(offer.totalBytes) bytes from block \(first) for migration \(id): not whole \(blockBytes)-byte blocks")
                let why = "\(offer.totalBytes) bytes from block \(first) are not whole \(blockBytes)-byte blocks"
                release(i, outcome: "released", detail: why)
                return why
            }
            // The request grew on the source since the reservation: set more aside, or refuse.
            let more = first + blocks - i.machine.reservedBlocks
            if more > 0 {
                if let why = replicas.reserve(more, for: "", in: replica) {
                    problem("no_room", "migration \(id) needs \(more) more blocks: \(why)")
                    let refusal = "destination has no room for \(request)'s \(more) further blocks: \(why)"
                    release(i, outcome: "released", detail: refusal)
                    return refusal
                }
                i.machine.extend(by: more)
            }
            i.transferBytes = 0
            inbound["\(sender)/\(transfer)"] = InboundTransfer(migration: id, phase: phase, firstBlock: first, blocks: blocks, state: state,
                                                                 flow: m["flow"].flatMap(UInt64.init) ?? 0, offered: now,
                                                                 paceNanos: m["pace_ns"].flatMap(Int64.init) ?? 0)
            return nil
        default:
            problem("malformed_offer", "phase '\(phase)' from \(sender)")
            return "unknown phase '\(phase)' (reserve, stage, final, abort or staged)"
        }
    }

    public func consume(from sender: String, transfer: UInt64, offset: Int, bytes: UnsafeRawBufferPointer) throws {
        guard let t = inbound["\(sender)/\(transfer)"], let i = incoming[t.migration] else { return }
        guard let blockBytes = replicas.blockBytes(of: i.replica)?.held, blockBytes > 0 else { return }
        i.lastHeard = clock.monotonicNanos()
        var at = 0
        while at < bytes.count {
            let pos = offset + at, n = min(bytes.count - at, blockBytes - pos % blockBytes)
            do {
                try replicas.write(i.request, block: t.firstBlock + pos / blockBytes, offset: pos % blockBytes,
                                   bytes: UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)]), in: i.replica)
            } catch {
                problem("corrupt_block", "migration \(i.id) from \(sender): \(error)")
                throw error
            }
            at += n
        }
        i.bytes += bytes.count
        i.transferBytes += bytes.count
    }

    public func finished(from sender: String, transfer: UInt64, result: Result<Int, DataPlaneError>) {
        guard let t = inbound.removeValue(forKey: "\(sender)/\(transfer)"), let i = incoming[t.migration], i.machine.phase == .receiving else { return }
        i.lastHeard = clock.monotonicNanos()
        switch result {
        case .success:
            if let why = i.machine.receive(t.firstBlock..<(t.firstBlock + t.blocks)) { problem("out_of_order", why); release(i, outcome: "released", detail: why); return }
            if let st = t.state { i.state = st }
            if t.flow != 0 { tracer.record(.flowIn, "kv \(t.phase)", category: "migration", track: "migrations", at: clock.wallNanos(), flow: t.flow) }
            guard t.phase == "final" else { return }
            // The request resumes once its last blocks would have crossed the emulated KV link.
            if t.offered + t.paceNanos > clock.monotonicNanos() {
                paced.append((t.offered + t.paceNanos, { [weak self] in if i.machine.phase == .receiving { self?.commit(i, partial: false) } }))
            } else {
                commit(i, partial: false)
            }
        case .failure(.peerUnreachable(let endpoint, let silence)):
            orphan(i, why: "the source (\(endpoint)) went silent for \(silence) ms mid-copy", cut: t)
        case .failure(let e):
            release(i, outcome: "released", detail: "\(e)")
        }
    }

    /// A request whose KV its source staged on a memory host (there was no room here): it queues
    /// here as swapped out to that host, and the move is committed by accepting the offer.
    private func adoptStaged(id: String, request: String, replica: String, sender: String, meta m: [String: String], state: MigratingRequest?, now: Int64) -> String? {
        if let i = incoming[id] { return i.staged != nil ? nil : "migration \(id) is \(i.machine.phase) here" }   // a re-sent offer
        if finished.contains(id) { return "migration \(id) already ended here" }
        guard let state, let kv = StagedKV(meta: m) else {
            problem("malformed_offer", "a staged offer for \(request) from \(sender) without the request's state or where its KV is")
            return "a staged offer needs the request's state and staged_host, staged_tier, staged_prefix, staged_blocks, staged_seconds"
        }
        return takeOnStaged(id: id, request: request, replica: replica, sender: sender, kv: kv, state: state, now: now, recovered: false)
    }

    /// Keys a migration's KV and state are staged under on a memory host.
    static func stagePrefix(_ migration: String) -> String { "stage/\(migration)/" }

    /// Queues a request whose KV is staged on a memory host as swapped out there (see `adoptStaged`,
    /// and `resolve` for one whose source died before the hand-over); the reason when it cannot.
    private func takeOnStaged(id: String, request: String, replica: String, sender: String, kv: StagedKV, state: MigratingRequest, now: Int64, recovered: Bool) -> String? {
        guard let staging else { return "this node cannot fetch staged KV (no memory-tiers feature here)" }
        guard let tc = replicas.clock(of: replica) else { return "replica \(replica) is not serving on this node" }
        guard replicas.place(of: request, in: replica) == nil else { return "request \(request) is already on replica \(replica)" }
        if let why = staging.adopt(kv, request: request, replica: replica) { return why }
        // Its blocks come back by swap-in; the state kept beside them is no longer needed.
        staging.discard(kv, stateOnly: true)
        let wall = clock.wallNanos()
        replicas.adoptStaged(MigrationHandler.decode(state, clock: tc), highPriority: state.highPriority, in: replica, wallNanos: wall)
        let i = Incoming(id: id, request: request, replica: replica, sourceNode: sender, machine: MigrationDestination(request: request, reservedBlocks: 0),
                         state: state, now: now, wall: wall)
        i.staged = kv
        i.partial = recovered
        _ = i.machine.commit()
        i.committedWall = wall
        incoming[id] = i
        tracer.instant("commit \(request)", category: "migration", track: "migrations", args: ["migration": id, "staged_on": kv.host, "kv_blocks": "\(kv.blocks)"])
        return nil
    }

    /// The request resumes here with what arrived (the rest recomputed).
    private func commit(_ i: Incoming, partial: Bool) {
        let go = partial ? i.machine.resolve(resume: true) : i.machine.commit()
        guard !go.isEmpty, let tc = replicas.clock(of: i.replica) else { return }
        i.partial = partial
        let st = MigrationHandler.decode(i.state, clock: tc)
        let wall = clock.wallNanos()
        replicas.resume(st, highPriority: i.state.highPriority, reserved: i.machine.reservedBlocks, kvBlocks: i.machine.received, in: i.replica, wallNanos: wall)
        i.committedWall = wall
        tracer.instant("commit \(i.request)", category: "migration", track: "migrations",
                       args: ["migration": i.id, "kv_blocks": "\(i.machine.received)", "partial": "\(partial)"])
    }

    private func release(_ i: Incoming, outcome: String, detail: String) {
        _ = i.machine.abort()
        replicas.release(i.machine.reservedBlocks, for: i.request, in: i.replica)
        report(i, outcome: outcome, detail: detail, downtime: -1)
    }

    /// The source went silent (or the coordinator says it died): keep what arrived and ask.
    /// The blocks of a transfer cut short that arrived whole count (every byte was checked).
    private func orphan(_ i: Incoming, why: String, cut: InboundTransfer? = nil) {
        guard i.machine.phase == .receiving else { return }
        if let t = cut ?? inbound.values.first(where: { $0.migration == i.id }) {
            if let blockBytes = replicas.blockBytes(of: i.replica)?.held, blockBytes > 0, i.transferBytes >= blockBytes {
                _ = i.machine.receive(t.firstBlock..<(t.firstBlock + min(t.blocks, i.transferBytes / blockBytes)))
            }
            if let st = t.state { i.state = st }
        }
        guard !i.machine.sourceFailed().isEmpty else { return }
        report(i, outcome: "orphaned", detail: why + "; \(i.machine.received) blocks arrived, kept until the coordinator decides", downtime: -1, final: false)
    }

    private func resolve(_ r: ResolveOrphan, wallNanos: Int64) -> FeatureOutcome {
        guard let i = incoming[r.migrationID] else {
            if finished.contains(r.migrationID) { return FeatureOutcome(ok: true, detail: "migration \(r.migrationID) already resolved") }
            if r.resume, let staging, staging.canStage, !r.requestID.isEmpty, replicas.serves(r.destinationReplica), !recovering.contains(r.migrationID) {
                recoverStaged(r, staging: staging)
                return FeatureOutcome(ok: true, detail: "looking for \(r.requestID)'s KV staged on a memory host")
            }
            return .refused("no migration \(r.migrationID) is held on this node")
        }
        if i.machine.phase == .receiving { orphan(i, why: "the coordinator resolved it") }
        guard i.machine.phase == .orphaned else { return FeatureOutcome(ok: true, detail: "migration \(r.migrationID) is \(i.machine.phase)") }
        if r.resume {
            commit(i, partial: true)
            return FeatureOutcome(ok: true, detail: "resumed \(i.request) from \(i.machine.received) blocks (the rest recomputed)")
        }
        _ = i.machine.resolve(resume: false)
        replicas.release(i.machine.reservedBlocks, for: i.request, in: i.replica)
        report(i, outcome: "dropped", detail: "the coordinator dropped it", downtime: -1)
        return FeatureOutcome(ok: true, detail: "dropped \(i.request)")
    }

    /// Migrations whose staged state is being looked for on a memory host.
    private var recovering = Set<String>()

    /// The source died after staging the request's KV, before the hand-over: the state it put
    /// beside the blocks lets this node take the request on from the host alone. Found, the move
    /// commits here (reported "resumed-partial"); not found (the source died before its put
    /// ended), this node reports it holds nothing and the coordinator sends the request again.
    private func recoverStaged(_ r: ResolveOrphan, staging: KVStaging) {
        let id = r.migrationID, prefix = MigrationHandler.stagePrefix(r.migrationID)
        recovering.insert(id)
        staging.stagedState(keyPrefix: prefix) { [weak self] result in
            guard let self else { return }
            self.recovering.remove(id)
            guard self.incoming[id] == nil, !self.finished.contains(id) else { return }
            var why = ""
            switch result {
            case .success(let bytes):
                if let st = try? MigratingRequest(serializedBytes: bytes), st.requestID == r.requestID,
                   let kv = staging.locate(keyPrefix: prefix, blocks: (Int(st.computedTokens) + self.replicas.blockTokens - 1) / self.replicas.blockTokens, replica: r.destinationReplica) {
                    if let refused = self.takeOnStaged(id: id, request: r.requestID, replica: r.destinationReplica, sender: "", kv: kv, state: st,
                                                       now: self.clock.monotonicNanos(), recovered: true) {
                        why = refused
                    } else {
                        self.logger.info("migration: \(id): the source died before the hand-over; \(r.requestID) resumes here from its KV staged on \(kv.host)")
                        return
                    }
                } else {
                    why = "the staged state of \(r.requestID) is not readable"
                }
            case .failure(let e):
                why = "\(e)"
            }
            self.problem("staged_recovery_failed", "migration \(id): \(why)")
            var m = MigrationReport()
            m.migrationID = id; m.requestID = r.requestID; m.role = .destination; m.outcome = "dropped"
            m.detail = "nothing of it here, and no KV staged for it: \(why)"
            m.downtimeSeconds = -1; m.endedUnixNanos = self.clock.wallNanos()
            self.outcomes["\(id)/destination"] = m
            self.finished.insert(id)
        }
    }

    private func report(_ i: Incoming, outcome: String, detail: String, downtime: Double, final: Bool = true, normalTBT: Double = 0) {
        var r = MigrationReport()
        r.migrationID = i.id; r.requestID = i.request; r.role = .destination; r.outcome = outcome; r.detail = detail
        r.bytes = UInt64(i.bytes); r.blocks = UInt32(i.staged?.blocks ?? i.machine.received)
        r.tokens = i.state.promptTokens + i.state.generatedTokens
        r.downtimeSeconds = downtime; r.normalTbtSeconds = normalTBT
        r.staged = i.staged != nil
        r.startedUnixNanos = i.startedWall; r.endedUnixNanos = clock.wallNanos()
        r.kvBytesScale = replicas.blockBytes(of: i.replica)?.scale ?? 0
        outcomes["\(i.id)/destination"] = r
        if final {
            incoming[i.id] = nil
            finished.insert(i.id)
        }
    }

    // MARK: The loop

    public var isPumped: Bool { true }

    public func pump(wallNanos: Int64) {
        let now = clock.monotonicNanos()
        if paced.contains(where: { $0.due <= now }) {
            let due = paced.filter { $0.due <= now }
            paced.removeAll { $0.due <= now }
            for p in due { p.deliver() }
        }
        for o in Array(outgoing.values) {
            if let due = o.finalDueWall, wallNanos >= due { run(o, finalStage(o)); continue }
            // A request that finishes or is preempted on the source while its blocks are copied.
            if case .copying = o.machine.phase, let ended = ended(o) { run(o, o.machine.requestEnded(preempted: ended)) }
        }
        for i in Array(incoming.values) {
            switch i.machine.phase {
            case .resumed:
                // Downtime: the gap to its first token here, less its normal time between tokens.
                let normal = i.state.generatedTokens > 1 ? i.state.gapSumSeconds / Double(i.state.generatedTokens - 1) : 0
                let detail = i.staged.map { "staged on memory host \($0.host) (\($0.tier)), \($0.blocks) blocks fetched when room came"
                    + (i.partial ? "; taken from there after the source died before the hand-over" : "") } ?? ""
                if let gap = replicas.takeResumeGap(i.request, in: i.replica, wallNanos: wallNanos) {
                    report(i, outcome: i.partial ? "resumed-partial" : "committed", detail: detail, downtime: max(0, gap - normal), normalTBT: normal)
                } else if replicas.place(of: i.request, in: i.replica) == nil, wallNanos - (i.committedWall ?? wallNanos) > 5_000_000_000 {
                    report(i, outcome: i.partial ? "resumed-partial" : "committed", detail: "no token seen here", downtime: -1, normalTBT: normal)
                }
            case .receiving where now - i.lastHeard > sourceSilenceNanos && !inbound.values.contains { $0.migration == i.id }:
                orphan(i, why: "nothing from the source for \((now - i.lastHeard) / 1_000_000) ms between transfers")
            default: break
            }
        }
    }

    public var nextPumpDue: Int64? {
        // Monotonic: a final stage due, a committed request to watch, a silent source to check.
        var due: Int64?
        let now = clock.monotonicNanos()
        for o in outgoing.values {
            let next = o.finalDueWall.map { now + max(0, $0 - clock.wallNanos()) } ?? now + 20_000_000
            due = min(due ?? next, next)
        }
        if !incoming.isEmpty { due = min(due ?? .max, now + 20_000_000) }
        for p in paced { due = min(due ?? .max, p.due) }
        return due
    }

    // MARK: Reports

    public func reports(wallNanos: Int64) -> [FeatureReport] {
        var out = outcomes.sorted { $0.key < $1.key }.map { report(key: $0.key, $0.value) }
        let now = clock.monotonicNanos()
        for (replica, load, full) in replicas.loads(wallNanos: wallNanos) {
            var l = InstanceLoadReport()
            l.replicaID = replica; l.totalBlocks = UInt32(load.totalBlocks); l.usedBlocks = UInt32(load.usedBlocks)
            l.headOfQueueDemand = UInt32(load.headOfQueueDemand); l.waiting = UInt32(load.waiting); l.blockBytes = full
            l.waitingDemand = UInt32(clamping: load.waitingDemand)
            l.running = load.running.map { q in
                var r = RunningRequestLoad()
                r.requestID = q.id; r.blocks = UInt32(q.blocks); r.remainingTokens = UInt32(q.remaining); r.generatedTokens = UInt32(q.generated)
                r.highPriority = replicas.isHighPriority(q.id)
                return r
            }
            if let last = loadSentAt[replica], now - last.at < loadReportNanos || (last.load == l && now - last.at < 5 * loadReportNanos) { continue }
            loadSentAt[replica] = (now, l)
            out.append(report(key: "load/" + replica, l))
        }
        for gone in loadSentAt.keys where !replicas.serves(gone) { loadSentAt[gone] = nil }
        return out
    }

    public func settle(_ keys: [String]) { for k in keys { outcomes[k] = nil } }
    public func nextReportDue(wallNanos: Int64) -> Int64? { outcomes.isEmpty ? nil : wallNanos }
    public func running() -> [String] { outgoing.keys.sorted().map { "migration:" + $0 } }

    // MARK: State on the wire

    /// A request's state for the destination: its times as wall clock, so the destination puts
    /// them on its own replica's trace clock.
    static func encode(_ st: ServingEngine.SequenceState, clock tc: TraceClock, highPriority: Bool) -> MigratingRequest {
        var m = MigratingRequest()
        m.requestID = st.id; m.promptTokens = UInt32(st.prompt); m.decodeTokens = UInt32(st.decode)
        m.generatedTokens = UInt32(st.generated); m.computedTokens = UInt32(st.computed)
        m.arrivedUnixNanos = tc.wall(trace: st.arrived)
        m.admittedUnixNanos = st.admitted.map { tc.wall(trace: $0) } ?? 0
        m.firstTokenUnixNanos = st.firstToken.map { tc.wall(trace: $0) } ?? 0
        m.lastTokenUnixNanos = st.lastToken.map { tc.wall(trace: $0) } ?? 0
        m.gapSumSeconds = st.gapSum; m.maxGapSeconds = st.maxGap; m.preemptions = UInt32(st.preemptions)
        m.highPriority = highPriority
        return m
    }

    static func decode(_ m: MigratingRequest, clock tc: TraceClock) -> ServingEngine.SequenceState {
        ServingEngine.SequenceState(id: m.requestID, prompt: Int(m.promptTokens), decode: Int(m.decodeTokens), generated: Int(m.generatedTokens),
                                    computed: Int(m.computedTokens), arrived: tc.trace(wall: m.arrivedUnixNanos),
                                    admitted: m.admittedUnixNanos == 0 ? nil : tc.trace(wall: m.admittedUnixNanos),
                                    firstToken: m.firstTokenUnixNanos == 0 ? nil : tc.trace(wall: m.firstTokenUnixNanos),
                                    lastToken: m.lastTokenUnixNanos == 0 ? nil : tc.trace(wall: m.lastTokenUnixNanos),
                                    gapSum: m.gapSumSeconds, maxGap: m.maxGapSeconds, preemptions: Int(m.preemptions))
    }
}
