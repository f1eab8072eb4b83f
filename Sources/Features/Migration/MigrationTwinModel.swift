import Scheduling

/// Feature "migration" in the digital twin: the coordinator's policy over the twin's replica
/// engines (`InferenceTwinModel`), and each migration run by the agents' own machines
/// (`MigrationSource`, `MigrationDestination`) on virtual time. A copy takes its blocks' real size
/// over the KV link (the testbed's emulated link, which is what bounds its copies); the final stage
/// waits for the step in flight on the source, as the agent's does; the destination's first token
/// comes from its engine, so downtime is measured, not assumed. The router hears of each move as
/// the coordinator does. Times are trace seconds.
public struct MigrationTwinModel {
    /// The coordinator's settings (policy, method, budget, stage cap, concurrency, KV link), with
    /// its wall-clock interval turned into trace seconds, and the control plane's delay.
    public struct Settings: Sendable {
        public var migration = MigrationSettings()
        /// Trace seconds per wall second on the testbed being modelled (the policy's interval is wall time).
        public var timeScale = 10.0
        /// Trace seconds from a decision to the source acting on it and the destination's
        /// reservation (command delivery and a data-plane round trip on the testbed).
        public var controlLatency = 0.0
        /// Trace seconds between the replicas' load reports (each heartbeat on the testbed): the
        /// policy decides on the last report, as the coordinator does, so a queue head that comes
        /// and goes between two reports is not seen. 0: on the engines' live loads.
        public var loadReportInterval = 0.0
        /// Trace seconds from the first arrival to the first policy round. The coordinator's
        /// policy timer runs from its own start, so on the testbed a fault or a load change falls
        /// anywhere between two rounds; a twin whose rounds fell on the faults' instants (both
        /// whole multiples of the interval from the start) saw a reopened replica in the very
        /// round it reopened, before its first report, every time.
        public var firstRoundAfter = 0.0
        /// Each policy round as the policy saw it (trace seconds, the line the testbed's
        /// coordinator logs at debug level): to set the two side by side. Nil: not logged.
        public var roundLog: (@Sendable (Double, String) -> Void)?
        public var interval: Double { migration.interval * timeScale }
        public init(_ migration: MigrationSettings = MigrationSettings(), timeScale: Double = 10) { self.migration = migration; self.timeScale = timeScale }
    }

    /// One migration's outcome, as the coordinator records it.
    public typealias Outcome = MigrationOutcome

    public let settings: Settings
    let policy: MigrationPolicy

    struct Flight {
        var id: String
        var request: String
        var from: String
        var to: String
        var toNode: String
        var reason: String
        var source: MigrationSource
        var dest: MigrationDestination?
        var kept: ServingEngine.SequenceState?
        var started: Double
        var copying: (blocks: Range<Int>, final: Bool)?
        /// Staging: modelled seconds one way for its KV on the memory host.
        var stageSeconds = 0.0
        /// The request's normal time between tokens before it moved.
        var normalTBT = 0.0
        var outcome: Int
    }
    private var flights: [String: Flight] = [:]
    /// The replicas' loads at their last report (`loadReportInterval` > 0).
    private var reported: [String: (replica: String, node: String, load: ServingEngine.Load, blockBytes: Double)] = [:]
    private var nextNumber = 1
    public private(set) var outcomes: [Outcome] = []
    /// Committed moves whose first token on the destination is awaited: (outcome, request, replica, normal TBT).
    private var watching: [(outcome: Int, request: String, replica: String, normal: Double)] = []

    public init?(settings: Settings) {
        guard let p = MigrationPolicies.named(settings.migration.policy) else { return nil }
        self.init(settings: settings, policy: p)
    }

    /// With a policy of the caller's (e.g. other thresholds).
    public init(settings: Settings, policy: MigrationPolicy) {
        self.settings = settings
        self.policy = policy
    }

    public var inFlight: Int { flights.count }
    /// Whether the policy moves requests for load (scale-down then empties replicas by migration).
    public var migrates: Bool { policy.migrates }
    public var byReason: [String: Int] { outcomes.reduce(into: [:]) { $0[$1.reason, default: 0] += 1 } }
    public var byState: [String: Int] { outcomes.reduce(into: [:]) { $0[$1.state, default: 0] += 1 } }

    // MARK: Rounds

    /// Replicas report in this many staggered groups, each once per `loadReportInterval`: on the
    /// testbed each agent reports on its own clock, so the coordinator's view at a round mixes
    /// reports of different ages; all at one instant, every round saw them the same age.
    public static let reportPhases = 4

    /// Which group a replica reports with (a stable hash of its id).
    public static func reportPhase(of replica: String) -> Int { Int(stableHash(replica) % UInt64(reportPhases)) }

    /// The replicas of group `phase` (every replica: nil) report their loads at `now` (a
    /// heartbeat on the testbed); a replica no longer serving is forgotten. Llumnix's
    /// dispatching takes each report as it comes, as the coordinator does: applied again at a
    /// later round it would undo what the router took off for the requests sent since.
    public mutating func reportLoads(at now: Double, phase: Int? = nil, replicas: inout InferenceTwinModel, router: RequestRouter) {
        let loads = replicas.loads(at: now)
        let serving = Set(loads.map(\.replica))
        reported = reported.filter { serving.contains($0.key) }
        let due = loads.filter { phase == nil || Self.reportPhase(of: $0.replica) == phase }
        for l in due { reported[l.replica] = l }
        if policy.dispatchesByFreeness { router.dispatch = .freeness; updateDispatch(due, router: router) }
    }

    private func updateDispatch(_ loads: [(replica: String, node: String, load: ServingEngine.Load, blockBytes: Double)], router: RequestRouter) {
        for l in loads { router.updateKV(l.replica, freeBlocks: l.load.totalBlocks - l.load.usedBlocks - max(l.load.waitingDemand, l.load.headOfQueueDemand), running: l.load.running.count) }
    }

    /// A policy round at `now`: the replicas' loads (each serving replica of a service with a ready
    /// router entry), the policy's decisions, migrations started. Returns the times to call `step`.
    public mutating func round(at now: Double, replicas: inout InferenceTwinModel, router: RequestRouter,
                               health: (String) -> InstanceLoad.Health, slo: (String) -> Double?) -> [(at: Double, id: String)] {
        collectDowntimes(at: now, replicas: &replicas)
        let busyRequests = Set(flights.values.map(\.request))
        let busyReplicas = Set(flights.values.flatMap { [$0.from, $0.to] })
        let live = replicas.loads(at: now)
        // The coordinator's view: each serving replica's last report. One that has not reported
        // yet (just started, or back after a restart) is left out of the round, as the
        // coordinator leaves out a replica it has no load of: seen as empty, it drew a make-room
        // move the testbed never made, while the router was already filling it.
        let loads = settings.loadReportInterval > 0 ? live.compactMap { reported[$0.replica] } : live
        // Llumnix's dispatching reads the same loads: live ones at each round, else each report as it comes.
        router.dispatch = policy.dispatchesByFreeness ? .freeness : .shortestQueue
        if policy.dispatchesByFreeness && settings.loadReportInterval <= 0 { updateDispatch(live, router: router) }
        var decisions: [MigrationDecision] = []
        for service in Set(router.ready.values.map(\.service)).sorted() {
            let instances = loads.filter { router.ready[$0.replica]?.service == service && !busyReplicas.contains($0.replica) }.map { l -> InstanceLoad in
                let running = l.load.running.map { q -> RequestLoad in
                    var slack = Double.infinity
                    if let rec = router.records[q.id], let s = slo(rec.request.serviceID) {
                        let elapsed = max(0, now - rec.request.arrival)
                        slack = s - elapsed - Double(q.remaining) * elapsed / Double(max(1, q.generated))
                    }
                    return RequestLoad(id: q.id, blocks: q.blocks, remainingTokens: q.remaining, highPriority: router.records[q.id]?.request.highPriority ?? false, sloSlack: slack)
                }
                let h = router.closed.contains(l.replica) ? .draining : health(l.node)
                return InstanceLoad(id: l.replica, node: l.node, totalBlocks: l.load.totalBlocks, usedBlocks: l.load.usedBlocks,
                                    headOfQueueDemand: l.load.headOfQueueDemand, running: running, health: h)
            }
            guard instances.count >= 2, let first = loads.first(where: { $0.replica == instances[0].id }) else { continue }
            var costs = MigrationCosts(blockBytes: first.blockBytes, bandwidthBytesPerSecond: settings.migration.kvLinkBytesPerSecond)
            costs.staging = settings.migration.staging && replicas.tiers != nil
            let chosen = !policy.migrates
                ? (instances.contains { $0.health == .draining } ? LlumnixMigration().decide(instances, costs: costs, busy: busyRequests).filter { $0.reason == .drain } : [])
                : policy.decide(instances, costs: costs, busy: busyRequests)
            decisions += chosen
            settings.roundLog?(now, MigrationController.roundLine(instances, chosen))
        }
        var events: [(Double, String)] = []
        var used = busyReplicas
        guard flights.count < settings.migration.maxConcurrent else { return [] }
        for d in decisions where flights.count < settings.migration.maxConcurrent && !used.contains(d.from) && !used.contains(d.to) {
            guard let rec = router.records[d.request], rec.finished == nil, rec.replica == d.from, let toNode = replicas.node(of: d.to) else { continue }
            used.insert(d.from); used.insert(d.to)
            let id = "mig-\(nextNumber)"
            nextNumber += 1
            let st = replicas.peek(d.request, in: d.from)
            let tokens = st.map { $0.prompt + $0.generated } ?? rec.request.prefill
            var plan = MigrationPlan(method: settings.migration.method, blockBytes: fullBlockBytes(replicas, d.from), bandwidthBytesPerSecond: settings.migration.kvLinkBytesPerSecond)
            plan.downtimeBudget = settings.migration.downtimeBudget
            plan.stageCap = settings.migration.stageCap
            plan.staging = settings.migration.staging && replicas.tiers != nil
            let total = (tokens + replicas.blockTokens - 1) / replicas.blockTokens + 1
            let at = now + settings.controlLatency
            let (machine, first) = MigrationSource.start(request: d.request, plan: plan, totalBlocks: total, at: at)
            outcomes.append(Outcome(id: id, request: d.request, from: replicas.node(of: d.from) ?? d.from, to: toNode, reason: d.reason.rawValue,
                                    state: "in-flight", tokens: tokens, stages: 0, started: at))
            var f = Flight(id: id, request: d.request, from: d.from, to: d.to, toNode: toNode, reason: d.reason.rawValue, source: machine, started: at, outcome: outcomes.count - 1)
            if let st, st.generated > 1 { f.normalTBT = st.gapSum / Double(st.generated - 1) }
            router.migrationStarted(d.request, to: d.to)
            events += run(&f, first, at: at, replicas: &replicas, router: router)
            if !isEnded(f) { flights[id] = f }
        }
        return events
    }

    /// The destination's side of a move ends: its reserved blocks go back to its engine's pool.
    private func dropDestination(_ f: inout Flight, replicas: inout InferenceTwinModel) {
        if let d = f.dest { replicas.release(d.reservedBlocks, in: f.to) }
        f.dest = nil
    }

    /// Replicas a move in flight copies to (they hold its reservation).
    public var destinations: Set<String> { Set(flights.values.map(\.to)) }

    private func isEnded(_ f: Flight) -> Bool {
        switch f.source.phase { case .done, .aborted: return true; default: return false }
    }

    private func fullBlockBytes(_ replicas: InferenceTwinModel, _ replica: String) -> Double {
        replicas.replicas[replica].map { $0.engine.model.arch.kvBytesPerToken * Double($0.engine.config.blockTokens) / Double($0.engine.model.tensorParallel) } ?? 0
    }

    /// Trace seconds a copy of `blocks` blocks takes on the KV link.
    private func copySeconds(_ blocks: Int, _ replicas: InferenceTwinModel, _ replica: String) -> Double {
        guard settings.migration.kvLinkBytesPerSecond > 0 else { return 0 }
        return Double(blocks) * fullBlockBytes(replicas, replica) / settings.migration.kvLinkBytesPerSecond
    }

    /// Carries out a source machine's directives at `now`; returns when copies end.
    private mutating func run(_ f: inout Flight, _ directives: [MigrationSource.Directive], at now: Double,
                              replicas: inout InferenceTwinModel, router: RequestRouter) -> [(at: Double, id: String)] {
        var queue = directives
        var events: [(Double, String)] = []
        while !queue.isEmpty {
            switch queue.removeFirst() {
            case .reserve(let n):
                if replicas.reserve(n, in: f.to) {
                    f.dest = try? MigrationDestination.reserve(request: f.request, blocks: n, free: n).get()
                    queue += f.source.reserved(true, computed: replicas.completeBlocks(of: f.request, in: f.from) ?? 0, at: now)
                } else {
                    queue += f.source.reserved(false, reason: "destination full", computed: 0, at: now)
                }
            case .copy(_, let range):
                f.copying = (range, false)
                events.append((now + copySeconds(range.count, replicas, f.from), f.id))
            case .suspend:
                guard let st = replicas.takeOut(f.request, from: f.from, at: now) else {
                    queue += f.source.requestEnded(preempted: false)
                    continue
                }
                f.kept = st
                // The final copy starts once the step in flight has computed its token's KV.
                let due = max(now, st.lastToken ?? now)
                let more = f.source.suspended(computed: (st.computed + replicas.blockTokens - 1) / replicas.blockTokens, at: due)
                for d in more {
                    if case .copyFinal(let range) = d {
                        f.copying = (range, true)
                        events.append((due + copySeconds(range.count, replicas, f.from), f.id))
                    }
                    if case .stageOut(let range) = d {
                        guard let s = replicas.stageSeconds(blocks: range.count, in: f.from) else {
                            queue += f.source.stagedOut(false, reason: "no memory host", at: due)
                            continue
                        }
                        f.stageSeconds = s
                        f.copying = (range, true)
                        events.append((due + s, f.id))
                    }
                }
            case .copyFinal, .stageOut: break   // handled with the suspension
            case .handOver:
                // The destination takes it on as swapped out to the memory host: the move commits.
                guard let st = f.kept, replicas.serving(f.to) else { queue += f.source.destinationFailed("destination replica gone"); continue }
                replicas.adoptStaged(st, seconds: f.stageSeconds, in: f.to, at: now)
                router.moved(f.request, to: f.to, node: f.toNode)
                watching.append((f.outcome, f.request, f.to, f.normalTBT))
                outcomes[f.outcome].staged = true
                queue += f.source.committed(at: now)
            case .dropStaged: break
            case .free: break        // out of the source's engine since the suspension
            case .resumeHere:
                if let st = f.kept {
                    replicas.resume(st, reserved: 0, kvBlocks: (st.computed + replicas.blockTokens - 1) / replicas.blockTokens, in: f.from, at: now)
                }
            case .abortDestination:
                dropDestination(&f, replicas: &replicas)
            case .report(let phase):
                switch phase {
                case .done: outcomes[f.outcome].state = "done"
                case .aborted(let why):
                    outcomes[f.outcome].state = "aborted"
                    outcomes[f.outcome].detail = why.description
                    router.migrationEnded(f.request)
                default:
                    outcomes[f.outcome].state = "aborted"
                    router.migrationEnded(f.request)
                }
                outcomes[f.outcome].stages = f.source.stages
                outcomes[f.outcome].ended = now
            }
        }
        return events
    }

    /// A copy of migration `id` is over at `now`.
    public mutating func step(_ id: String, at now: Double, replicas: inout InferenceTwinModel, router: RequestRouter) -> [(at: Double, id: String)] {
        guard var f = flights[id], let (range, final) = f.copying else { return [] }
        f.copying = nil
        var events: [(Double, String)] = []
        if f.source.staged {
            events = run(&f, f.source.stagedOut(true, blocks: range.count, at: now), at: now, replicas: &replicas, router: router)
            return finish(f, events)
        }
        // The destination gone (crashed or stopped) fails the copy.
        guard replicas.serving(f.to) else {
            events = run(&f, f.source.destinationFailed("destination replica gone"), at: now, replicas: &replicas, router: router)
            return finish(f, events)
        }
        if let d = f.dest, range.upperBound > d.reservedBlocks {
            let more = range.upperBound - d.reservedBlocks
            if replicas.reserve(more, in: f.to) { f.dest!.extend(by: more) } else {
                // The destination refuses the stage and drops its side, its reservation back in the
                // pool (as the agent's handler does); the source takes it as the destination failing.
                dropDestination(&f, replicas: &replicas)
                events = run(&f, f.source.destinationFailed("destination has no room for \(more) further blocks"), at: now, replicas: &replicas, router: router)
                return finish(f, events)
            }
        }
        _ = f.dest?.receive(range)
        if !final {
            switch replicas.place(of: f.request, in: f.from, at: now) {
            case .running?:
                events = run(&f, f.source.stageCopied(computed: replicas.completeBlocks(of: f.request, in: f.from) ?? 0, at: now),
                             at: now, replicas: &replicas, router: router)
            case let other:
                events = run(&f, f.source.requestEnded(preempted: other != nil), at: now, replicas: &replicas, router: router)
            }
            return finish(f, events)
        }
        // The final copy arrived: the destination resumes it; the router hears of the move.
        if let st = f.kept, var d = f.dest, !d.commit().isEmpty {
            replicas.resume(st, reserved: d.reservedBlocks, kvBlocks: d.received, in: f.to, at: now)
            f.dest = d
            router.moved(f.request, to: f.to, node: f.toNode)
            watching.append((f.outcome, f.request, f.to, f.normalTBT))
        }
        events = run(&f, f.source.finalDelivered(at: now) + f.source.committed(at: now), at: now, replicas: &replicas, router: router)
        return finish(f, events)
    }

    private mutating func finish(_ f: Flight, _ events: [(at: Double, id: String)]) -> [(at: Double, id: String)] {
        if isEnded(f) { flights[f.id] = nil } else { flights[f.id] = f }
        return events
    }

    /// The moved requests' first tokens on their destinations: their downtime.
    public mutating func collectDowntimes(at now: Double, replicas: inout InferenceTwinModel) {
        watching.removeAll { w in
            if let gap = replicas.takeResumeGap(w.request, in: w.replica, at: now) {
                outcomes[w.outcome].downtime = max(0, gap - w.normal)
                return true
            }
            return !replicas.serving(w.replica)
        }
    }
}
