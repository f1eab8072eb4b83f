import Features
import Foundation
import Scheduling

/// A node failure for the twin to replay: `node` dies at `at` and is back `downFor` later.
public struct NodeFailure: Sendable, Codable, Equatable {
    public var node: String
    /// When the node crashes: its jobs stop making progress (they keep their last checkpoint).
    public var at: Double
    public var downFor: Double
    /// How long until the scheduler learns of it (the failure detector's delay); nil: at once.
    public var detectedAfter: Double?
    public init(node: String, at: Double, downFor: Double, detectedAfter: Double? = nil) {
        self.node = node; self.at = at; self.downFor = downFor; self.detectedAfter = detectedAfter
    }
}

public struct TwinOptions: Sendable {
    /// Trace seconds between the step-time reports a modelled agent sends.
    public var reportInterval: Double = 300
    public var failures: [NodeFailure] = []
    /// Seconds between a job's start decision and the agent acting on it (command latency on the
    /// testbed, in trace time); 0 in a pure simulation.
    public var startLatency: Double = 0
    /// Trace seconds between a job finishing and the scheduler learning it (the testbed hears it
    /// with the next heartbeat); the job's finish time stays exact, its GPUs free up this much later.
    public var reportLatency: Double = 0
    /// Trace seconds between the router sending requests and the agent's engine taking them (the
    /// serve command's transit); 0 in a pure simulation.
    public var serveLatency: Double = 0
    /// Trace seconds from a killed node's restart to its agent registering again (the process
    /// starting and its first registration on the testbed); its replicas start only then.
    public var rejoinLatency: Double = 0
    /// Inference requests to serve one by one, routed by the coordinator's `RequestRouter` to
    /// modelled replicas (`InferenceTwinModel`); empty: services are a fluid served up to their
    /// replicas' capacity.
    public var requests: [ServiceRequest] = []
    /// Live migration of requests between replicas (nil: none), as the coordinator's feature runs it.
    public var migration: MigrationTwinModel.Settings?
    /// A policy object to migrate with instead of `migration.policy`'s (other thresholds, a new policy).
    public var migrationPolicy: MigrationPolicy?
    /// Nodes drained by the operator: (node, from, until) in trace seconds; their replicas take no
    /// new requests and the migration policy empties them.
    public var drains: [(node: String, from: Double, until: Double)] = []
    /// Memory hosts' tiers and the offload policy (nil: no memory tier).
    public var tiers: TiersTwinModel.Settings?
    /// Requests the router lets a replica have outstanding, as a multiple of its batch (the
    /// coordinator's); nil: none held at the router, each goes to a replica on arrival and waits
    /// in its engine's queue (vLLM behind Llumnix's dispatcher). Twin only for now.
    public var routerHoldFactor: Int? = RequestRouter.defaultHoldFactor
    /// Trace seconds without a request finishing, every one having arrived, after which a run is
    /// stuck and ends naming where: far beyond any request's service here (a 100k-token output
    /// decodes in under 3 h even at 100 ms a token).
    public var stallLimit = 6 * 3600.0
    public init() {}
}

/// The digital twin: the coordinator's machines (`Scheduler`, `ClusterState`, the policies, the
/// `RequestRouter` and its backlog rule) on a discrete-event clock, with the features' twin models
/// (`JobsTwinModel`, `InferenceTwinModel`) standing in for the agents. Time is trace seconds.
public struct DigitalTwin {
    public let nodes: [NodeSlot]
    public let workload: Workload
    public let options: TwinOptions
    public var execution: ExecutionModel

    public init(nodes: [NodeSlot], workload: Workload, kb: KnowledgeBase, options: TwinOptions = TwinOptions()) {
        self.nodes = nodes; self.workload = workload; self.options = options
        self.execution = ExecutionModel(kb: kb)
    }

    enum Event {
        case arrival(Int)
        case started(String, Int)      // overhead over: progress begins (or OOM)
        case done(String, Int)
        case released(String, Int, Double)
        case report(String, Int)
        case serviceChange
        case nodeCrash(String)
        case nodeDown(String)
        case nodeUp(String)
        case request(Int)
        case replicaReady(String)
        case requestDone(InferenceTwinModel.Finish)
        case replicaWake(String)
        case migrationRound
        case migrationStep(String)
        /// One staggered group of replicas reports its loads (`MigrationTwinModel.reportPhases`).
        case loadReport(phase: Int)
        case drain(String, Bool)
    }

    public func run(policy: SchedulingPolicy) -> RunResult {
        let wallStart = DispatchTime.now().uptimeNanoseconds
        var scheduler = Scheduler(policy: policy, kb: execution.kb)
        if let t = options.tiers, t.linkBytesPerSecond > 0 { scheduler.weightLinkBytesPerSecond = t.linkBytesPerSecond }
        for s in workload.services.sorted(by: { $0.id < $1.id }) { scheduler.addService(s) }
        for n in nodes { scheduler.state.addNode(n) }
        var queue = EventQueue<Event>()
        for (i, j) in workload.jobs.enumerated() { queue.push(j.arrival, .arrival(i)) }
        for s in scheduler.services { for p in s.rateCurve { queue.push(p.time, .serviceChange) } }
        for f in options.failures {
            queue.push(f.at, .nodeCrash(f.node))
            queue.push(f.at + max(0, f.detectedAfter ?? 0), .nodeDown(f.node))
            queue.push(f.at + f.downFor + max(0, options.rejoinLatency), .nodeUp(f.node))
        }
        var jobs = JobsTwinModel(execution: execution)
        var serviceOut = Dictionary(uniqueKeysWithValues: scheduler.services.map { ($0.id, ServiceOutcome(id: $0.id)) })
        var lastServiceTime = 0.0
        var events = 0
        var submitted = 0
        var lastFinish = 0.0

        // Request by request: each arrives at the coordinator's router, which sends it to a ready
        // replica (join-shortest-queue, up to twice the batch) or holds it; a lost replica's
        // requests go back to it. The router's backlog scales replicas as on the testbed.
        let requestLevel = !options.requests.isEmpty
        let router = RequestRouter()
        var replicas = InferenceTwinModel()
        let tierModel = options.tiers.flatMap { try? TiersTwinModel($0) }
        replicas.tiers = tierModel
        // Cache-aware routing comes with our offload policy, as on the coordinator.
        router.prefixAffinity = tierModel?.policy.name == "tiered"
        router.holdFactor = options.routerHoldFactor

        let servicesByID = Dictionary(uniqueKeysWithValues: scheduler.services.map { ($0.id, $0) })
        for (i, q) in options.requests.enumerated() { queue.push(q.arrival, .request(i)) }
        // Migration: the coordinator's policy rounds over the replicas' engines; nodes silent
        // before the failure detector declares them dead look suspect to it, drained ones draining.
        var migration = requestLevel ? options.migration.flatMap { m in
            options.migrationPolicy.map { MigrationTwinModel(settings: m, policy: $0) } ?? MigrationTwinModel(settings: m)
        } : nil
        scheduler.retireByMigration = migration?.migrates ?? false
        /// Retiring replicas that are empty, or past their deadline, stop (as the coordinator's turn does).
        func retireEmptied(at now: Double) {
            for id in scheduler.retirable(now: now, isEmpty: { id in router.outstanding(on: id).isEmpty && !router.migrating.values.contains(id) }) {
                scheduler.retired(id)
                replicaLost(id, at: now)
            }
        }
        /// Load reports fall every `loadReportInterval` from the first arrival, the groups evenly
        /// apart; each round queues those up to the next round (so they never keep a finished run
        /// going on their own), and the first queues those before it: agents report from the start.
        let reportsFrom = options.requests.map(\.arrival).min() ?? 0
        func queueReports(after now: Double, through until: Double) {
            let phases = MigrationTwinModel.reportPhases
            guard let m = migration, m.settings.loadReportInterval > 0 else { return }
            let every = m.settings.loadReportInterval / Double(phases)
            var k = (max(0, now - reportsFrom) / every).rounded(.down) + 1
            while reportsFrom + k * every <= until {
                queue.push(reportsFrom + k * every, .loadReport(phase: Int(k) % phases)); k += 1
            }
        }
        if let m = migration, !options.requests.isEmpty {
            queue.push(reportsFrom + m.settings.firstRoundAfter, .migrationRound)
            queueReports(after: reportsFrom, through: reportsFrom + m.settings.firstRoundAfter)
        }
        for d in options.drains { queue.push(d.from, .drain(d.node, true)); queue.push(d.until, .drain(d.node, false)) }
        var drained = Set<String>(), silent = Set<String>(), closedForDrain = Set<String>()
        /// Replicas on drained nodes take no new requests (a retiring replica stays closed).
        func syncClosed() {
            for (id, r) in router.ready {
                let d = drained.contains(r.node)
                if d && !router.closed.contains(id) { router.setClosed(id, true); closedForDrain.insert(id) }
                if !d && closedForDrain.remove(id) != nil { router.setClosed(id, false) }
            }
        }
        var requestsArrived = 0, requestsDone = 0
        /// When a request last finished (trace seconds): a run whose requests have all arrived and
        /// none finishes for `options.stallLimit` is stuck (an engine that can never admit its queue), and
        /// ends naming where, instead of stepping engines for ever.
        var lastRequestDone = -Double.infinity, stuck: [String] = [], nextStallCheck = -Double.infinity
        let lastArrival = options.requests.map(\.arrival).max() ?? 0
        let inference = Dictionary(uniqueKeysWithValues: scheduler.services.compactMap { s in
            scheduler.plannedModel(s).map { (s.id, $0) }
        })
        func slo(_ service: String) -> Double { servicesByID[service]?.sloSeconds ?? .infinity }
        func replicaLost(_ id: String, at now: Double) {
            replicas.stop(id, at: now)
            router.replicaGone(id)
        }
        /// Per replica, when its engine is next looked at (its next result or step).
        var wakeAt: [String: Double] = [:]
        func wake(_ replica: String, at t: Double?) {
            guard let t, t < (wakeAt[replica] ?? .infinity) else { return }
            wakeAt[replica] = t
            queue.push(t, .replicaWake(replica))
        }
        func deliver(_ f: InferenceTwinModel.Finish) {
            guard replicas.delivers(f) else { return }
            let wasDone = router.records[f.completion.requestID]?.finished != nil
            _ = router.complete([f.completion], node: f.node, slo: slo)
            if !wasDone { requestsDone += 1; lastRequestDone = max(lastRequestDone, f.completion.finished) }
        }
        func routeRequests(at now: Double) {
            for r in router.route(now: now) {
                replicas.serve(r.replica, r.requests, at: now + options.serveLatency)
                wake(r.replica, at: replicas.nextLook(r.replica))
            }
        }

        func accountServices(until now: Double) {
            guard now > lastServiceTime else { return }
            let dt = now - lastServiceTime
            for s in scheduler.services {
                let offered = s.rate(at: lastServiceTime) * dt
                let reps = scheduler.replicas(of: s.id).count
                let cap = Double(reps) * (scheduler.capacityPerReplica[s.id] ?? 0) * dt
                serviceOut[s.id]!.offeredRequests += offered
                serviceOut[s.id]!.servedWithinSLO += min(offered, cap)
                serviceOut[s.id]!.replicaSeconds += Double(reps) * dt
            }
            lastServiceTime = now
        }

        while let (now, first) = queue.pop() {
            var batch = [first]
            while let t = queue.nextTime, t == now, let e = queue.pop() { batch.append(e.event) }
            accountServices(until: now)
            var dirty = false
            // Whether the router may have something new to do: a step of an engine that finished
            // nothing changes nothing it sees.
            var routerChanged = false
            for ev in batch {
                switch ev { case .replicaWake, .loadReport: break; default: routerChanged = true }
                events += 1
                switch ev {
                case .arrival(let i):
                    scheduler.state.submit(workload.jobs[i]); submitted += 1; dirty = true
                case .serviceChange:
                    dirty = true
                case .started(let id, let g):
                    guard jobs.isCurrent(id, generation: g), jobs.runs[id] != nil else { continue }
                    if let finish = jobs.finishTime(id, at: now) {
                        queue.push(finish, .done(id, g))
                        queue.push(now + options.reportInterval, .report(id, g))
                    } else {
                        jobs.end(id, at: now)
                        scheduler.state.failedStart(job: id, at: now)
                        dirty = true
                    }
                case .done(let id, let g):
                    guard jobs.isCurrent(id, generation: g) else { continue }
                    if options.reportLatency > 0 { queue.push(now + options.reportLatency, .released(id, g, now)); continue }
                    jobs.end(id, at: now)
                    scheduler.state.finish(job: id, at: now)
                    lastFinish = max(lastFinish, now)
                    dirty = true
                case .released(let id, let g, let at):
                    guard jobs.isCurrent(id, generation: g) else { continue }
                    jobs.end(id, at: now)
                    scheduler.state.finish(job: id, at: at)
                    lastFinish = max(lastFinish, at)
                    dirty = true
                case .report(let id, let g):
                    guard jobs.isCurrent(id, generation: g), let m = jobs.measure(id, at: now, interval: options.reportInterval) else { continue }
                    let key = jobs.runs[id]!.key
                    scheduler.kb.recordOnline(key, throughput: m.throughput, unit: scheduler.state.jobs[id]!.spec.unit, stepTime: nil)
                    scheduler.state.progress(job: id, workDone: m.work, checkpointed: m.checkpointed)
                    queue.push(now + options.reportInterval, .report(id, g))
                case .nodeCrash(let node):
                    silent.insert(node)
                    replicas.nodeCrashed(node, at: now)
                    tierModel?.hostCrashed(node)
                    // Work stops here; the scheduler still believes the node alive until .nodeDown.
                    for r in jobs.nodeCrashed(node, at: now) { scheduler.state.progress(job: r.job, workDone: r.work, checkpointed: r.checkpointed) }
                case .nodeDown(let node):
                    silent.remove(node)
                    tierModel?.hostDetected(node)
                    for r in jobs.liveRuns(on: node, at: now) { scheduler.state.progress(job: r.job, workDone: r.work, checkpointed: r.checkpointed) }
                    let lost = scheduler.state.nodeFailed(node, at: now)
                    for id in lost.jobs { jobs.end(id, at: now) }
                    for id in lost.replicas { replicaLost(id, at: now) }
                    dirty = true
                case .nodeUp(let node):
                    tierModel?.hostUp(node)
                    scheduler.state.nodeRecovered(node); dirty = true
                case .request(let i):
                    _ = router.submit([options.requests[i]], services: servicesByID)
                    requestsArrived += 1
                case .replicaReady(let id):
                    // The agent acknowledged the start (the coordinator's `replicaStarted`).
                    guard let r = scheduler.state.replicas[id] else { continue }
                    router.replicaReady(id, service: r.serviceID, node: r.placement.nodeID, batch: scheduler.batchPerReplica[r.serviceID] ?? 1)
                    syncClosed()
                case .requestDone(let f):
                    deliver(f)
                case .drain(let node, let on):
                    if on { drained.insert(node) } else { drained.remove(node) }
                    syncClosed()
                case .migrationRound:
                    guard migration != nil else { continue }
                    syncClosed()
                    let steps = migration!.round(at: now, replicas: &replicas, router: router,
                                                 health: { silent.contains($0) ? .suspect : .alive }, slo: { servicesByID[$0]?.sloSeconds })
                    for s in steps { queue.push(s.at, .migrationStep(s.id)) }
                    retireEmptied(at: now)
                    for id in replicas.replicaIDs { wake(id, at: replicas.nextLook(id)) }
                    // With nothing else queued no request can ever finish (none can be served):
                    // another round would only spin.
                    if migration!.inFlight > 0 || (requestsDone < options.requests.count && queue.nextTime != nil) {
                        let next = now + migration!.settings.interval
                        queue.push(next, .migrationRound)
                        queueReports(after: now, through: next)
                    }
                case .loadReport(let phase):
                    guard migration != nil else { continue }
                    migration!.reportLoads(at: now, phase: phase, replicas: &replicas, router: router)
                case .migrationStep(let id):
                    guard migration != nil else { continue }
                    for s in migration!.step(id, at: now, replicas: &replicas, router: router) { queue.push(s.at, .migrationStep(s.id)) }
                    migration!.collectDowntimes(at: now, replicas: &replicas)
                    for id in replicas.replicaIDs { wake(id, at: replicas.nextLook(id)) }
                case .replicaWake(let id):
                    guard wakeAt[id] == now else { continue }   // superseded by an earlier look
                    wakeAt[id] = nil
                    let (finished, next) = replicas.collect(id, at: now)
                    if !finished.isEmpty { routerChanged = true }
                    for f in finished {
                        // The agent reports a result as its last token is out, heard `reportLatency` later.
                        if options.reportLatency > 0 { queue.push(f.completion.finished + options.reportLatency, .requestDone(f)) } else { deliver(f) }
                    }
                    wake(id, at: next)
                }
            }
            if requestLevel && routerChanged {
                // As the coordinator's loop turn: the router's backlog may call for more replicas.
                scheduler.backlog = router.scalingBacklog(now: now, slo: slo)
                if scheduler.services.contains(where: { scheduler.desiredReplicas($0, at: now) > scheduler.replicas(of: $0.id).count }) { dirty = true }
            }
            if dirty {
                let actions = scheduler.step(now: now, currentWork: { jobs.work($0, at: now) })
                for a in actions {
                    switch a {
                    case .startJob(let id, let p, let resume):
                        let (g, from) = jobs.start(scheduler.state.jobs[id]!.spec, placement: p, resume: resume, at: now, startLatency: options.startLatency)
                        queue.push(from, .started(id, g))
                    case .preemptJob(let id, _, _):
                        jobs.end(id, at: now)
                    case .startReplica(let id, let service, let p):
                        guard requestLevel, let m = inference[service] else { continue }
                        replicas.start(id, node: p.nodeID, model: m, batch: servicesByID[service]?.engineSlots(batch: scheduler.batchPerReplica[service] ?? 1) ?? 1)
                        queue.push(now + options.startLatency, .replicaReady(id))
                    case .stopReplica(let id, _, _):
                        if requestLevel { replicaLost(id, at: now) }
                    case .retireReplica(let id, _, _):
                        router.setClosed(id, true)
                    }
                }
            }
            if requestLevel && (routerChanged || dirty) { routeRequests(at: now) }
            // Stuck: every job done, every request arrived and on a replica (one still waiting for a
            // replica waits on a placement or a node, and the run goes on), and none finishing.
            if requestLevel, requestsArrived == options.requests.count, requestsDone < options.requests.count,
               submitted == workload.jobs.count, scheduler.state.unfinishedCount == 0, now >= nextStallCheck,
               now - max(lastRequestDone, lastArrival) > options.stallLimit {
                nextStallCheck = now + options.stallLimit / 10
                guard router.backlog(now: now, age: { _ in 0 }).isEmpty else { continue }
                stuck = ["requests: \(options.requests.count - requestsDone) never finished: none did for \(Int(options.stallLimit)) s of trace after the last arrival or result"]
                    + replicas.loads(at: now).filter { $0.load.waiting > 0 || !$0.load.running.isEmpty }.map { l in
                        "replica \(l.replica): \(l.load.running.count) running, \(l.load.waiting) waiting (the first needs \(l.load.headOfQueueDemand) blocks), \(l.load.totalBlocks - l.load.usedBlocks) of \(l.load.totalBlocks) blocks free"
                    }
                break
            }
            if submitted == workload.jobs.count && scheduler.state.unfinishedCount == 0
                && (!requestLevel || requestsDone >= options.requests.count) { break }
        }
        if requestLevel {
            // Requests never served (no replica could be placed for them) count as infinitely late.
            for s in scheduler.services {
                var latencies: [Double] = [], within = 0
                for q in options.requests where q.serviceID == s.id {
                    let l = router.records[q.id]?.latency ?? .infinity
                    latencies.append(l)
                    if l <= s.sloSeconds { within += 1 }
                }
                latencies.sort()
                var o = ServiceOutcome(id: s.id)
                o.offeredRequests = Double(latencies.count)
                o.servedWithinSLO = Double(within)
                o.replicaSeconds = serviceOut[s.id]?.replicaSeconds ?? 0
                o.latencyP50 = percentile(latencies, 50)
                o.latencyP99 = percentile(latencies, 99)
                let done = options.requests.filter { $0.serviceID == s.id }.compactMap { router.records[$0.id] }.filter { $0.finished != nil }
                let ttfts = done.compactMap(\.ttft).sorted(), tbts = done.map(\.meanTBT).sorted()
                if !ttfts.isEmpty { o.ttftP50 = percentile(ttfts, 50); o.ttftP99 = percentile(ttfts, 99) }
                if !tbts.isEmpty { o.tbtP99 = percentile(tbts, 99); o.maxTBTP50 = percentile(done.map(\.maxTBT).sorted(), 50) }
                o.preemptions = done.reduce(0) { $0 + $1.preemptions }
                serviceOut[s.id] = o
            }
        }
        let states = scheduler.state.jobs.values.sorted { $0.spec.id < $1.spec.id }
        var gpus: [String: Int] = [:]
        for n in nodes { gpus[n.gpuModel, default: 0] += n.gpuCount }
        let firstArrival = workload.jobs.map(\.arrival).min() ?? 0
        var skipped = workload.skipped.map(\.description) + scheduler.skippedServices.map { "service \($0.id): \($0.reason)" }
        skipped += states.filter(\.failed).map { "job \($0.spec.id): failed to start \($0.failedStarts) times (does not fit)" }
        skipped += scheduler.rejectedDecisions
        skipped += states.filter { $0.phase != .finished }.map { "job \($0.spec.id): never finished (\($0.phase); no node could hold a configuration it fits)" }
        skipped += stuck
        if requestLevel {
            skipped += DigitalTwin.lostBlocks(replicas.loads(at: lastServiceTime).map { ($0.replica, $0.load) }, reserving: migration?.destinations ?? [])
        }
        var result = RunResult(policy: policy.name, workload: workload.name, engine: "twin", emulated: true, jobs: states.map(\.outcome),
                               services: serviceOut.values.sorted { $0.id < $1.id }, busyGPUSeconds: jobs.busyGPUSeconds, gpusByModel: gpus,
                               makespan: max(lastFinish - firstArrival, 0), skipped: skipped, events: events,
                               wallSeconds: Double(DispatchTime.now().uptimeNanoseconds - wallStart) / 1e9)
        if let m = migration {
            for (k, v) in m.byReason { result.migrations["reason/" + k] = v }
            for (k, v) in m.byState { result.migrations["state/" + k] = v }
            let staged = m.outcomes.filter(\.staged).count
            if staged > 0 { result.migrations["staged"] = staged }
            // Staged moves' stall is the wait for room, not the copy's downtime (as the testbed's summary).
            result.migrationDowntimes = m.outcomes.filter { !$0.staged }.compactMap(\.downtime)
            result.migrationRecords = m.outcomes
        }
        if requestLevel {
            result.requests = options.requests.map { q in
                let r = router.records[q.id]
                var o = RequestOutcome(id: q.id, serviceID: q.serviceID, arrival: q.arrival, prefill: q.prefill, decode: q.decode, replica: r?.replica, node: r?.node,
                                      attempts: r?.attempts ?? 0, finished: r?.finished, latency: r?.latency, queued: r?.queued ?? 0, serviceSeconds: r?.service ?? 0,
                                      ttft: r?.ttft, meanTBT: r?.meanTBT ?? 0, maxTBT: r?.maxTBT ?? 0, preemptions: r?.preemptions ?? 0)
                o.highPriority = q.highPriority
                return o
            }
        }
        if let t = tierModel { result.tiers = t.counters; if router.prefixAffinity { result.tiers["prefix_routed"] = router.prefixRouted } }
        return result
    }
}

extension DigitalTwin {
    /// What a run's end says of blocks no request holds. An engine with nothing on it holds no
    /// blocks: any it does were lost by a path that never gave them back (a reservation kept, a
    /// free missed). A move still in flight when the last request finished holds its
    /// destination's reservation, so `reserving` (those destinations) are not named.
    static func lostBlocks(_ loads: [(replica: String, load: ServingEngine.Load)], reserving: Set<String>) -> [String] {
        loads.filter { $0.load.waiting == 0 && $0.load.running.isEmpty && $0.load.usedBlocks > 0 && !reserving.contains($0.replica) }.map {
            "replica \($0.replica): \($0.load.usedBlocks) KV blocks still held with no request on it (blocks lost)"
        }
    }
}
