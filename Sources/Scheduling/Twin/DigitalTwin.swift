import Foundation

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
    /// Inference requests to serve one by one on modelled replicas (`ReplicaServer`, as the GPU
    /// agents run them); empty: services are a fluid served up to their replicas' capacity.
    public var requests: [ServiceRequest] = []
    public init() {}
}

/// The digital twin: the same `Scheduler`, `ClusterState` and policies as the coordinator, with
/// modelled GPU agents (`ExecutionModel`) on a discrete-event clock. Time is trace seconds.
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
    }

    struct Run {
        var generation: Int
        var key: ConfigKey
        var nodeID: String
        var startedAt: Double
        var overhead: Double
        var resume: Double
        var rate: Double
        var total: Double
        var measurements = 0
        var progressFrom: Double { startedAt + overhead }
    }

    public func run(policy: SchedulingPolicy) -> RunResult {
        let wallStart = DispatchTime.now().uptimeNanoseconds
        var scheduler = Scheduler(policy: policy, kb: execution.kb, services: workload.services)
        for n in nodes { scheduler.state.addNode(n) }
        var queue = EventQueue<Event>()
        for (i, j) in workload.jobs.enumerated() { queue.push(j.arrival, .arrival(i)) }
        for s in scheduler.services { for p in s.rateCurve { queue.push(p.time, .serviceChange) } }
        for f in options.failures {
            queue.push(f.at, .nodeCrash(f.node))
            queue.push(f.at + max(0, f.detectedAfter ?? 0), .nodeDown(f.node))
            queue.push(f.at + f.downFor, .nodeUp(f.node))
        }
        var runs: [String: Run] = [:]
        var generation: [String: Int] = [:]
        /// Runs on a node that crashed and that the scheduler has not been told about yet.
        var crashedRuns = Set<String>()
        var busy: [String: Double] = [:]
        var serviceOut = Dictionary(uniqueKeysWithValues: scheduler.services.map { ($0.id, ServiceOutcome(id: $0.id)) })
        var lastServiceTime = 0.0
        var events = 0
        var submitted = 0
        var lastFinish = 0.0

        func workNow(_ id: String, _ now: Double) -> Double? {
            guard let r = runs[id] else { return nil }
            // Reads only the run (the scheduler may be mid-step when it asks).
            return min(r.resume + max(0, now - r.progressFrom) * r.rate, r.total)
        }
        func endRun(_ id: String, _ now: Double) {
            if let r = runs.removeValue(forKey: id) { busy[r.key.gpuModel, default: 0] += (now - r.startedAt) * Double(r.key.gpuCount) }
            generation[id, default: 0] += 1
            crashedRuns.remove(id)
        }
        // Request by request: each arrival goes to the replica of its service with the fewest
        // requests in it (as the coordinator routes), or waits for one; a replica that goes away
        // gives its unfinished requests to the others. Between events the replica set is fixed.
        let requestLevel = !options.requests.isEmpty
        var nextRequest = 0
        var servers: [String: ReplicaServer] = [:]
        /// Per replica: requests sent to it (`sent`: when the router would send it, later than its
        /// arrival when every replica was full), when each starts and finishes.
        var inReplica: [String: [(request: ServiceRequest, sent: Double, start: Double, finish: Double)]] = [:]
        var waitingRequests: [String: [ServiceRequest]] = [:]
        var finishOf: [String: Double] = [:]
        /// Nodes crashed and not yet detected: their replicas still get requests (the router does
        /// not know yet) but answer none until the detector removes them.
        var silent = Set<String>()
        let inference = Dictionary(uniqueKeysWithValues: scheduler.services.compactMap { s in
            InferenceModel(kb: execution.kb, model: s.model, gpuModel: s.gpuModel, tensorParallel: s.gpusPerReplica).map { (s.id, $0) }
        })
        // As the router: a replica takes up to twice its batch; when every one is full the request
        // waits for the first to have room (never, for a crashed one: it then waits for a decision).
        let cap = Dictionary(uniqueKeysWithValues: scheduler.services.map { ($0.id, 2 * max(1, scheduler.batchPerReplica[$0.id] ?? 1)) })
        func place(_ q: ServiceRequest, at t: Double) {
            var best: String?, bestAt = Double.infinity, bestLoad = Int.max
            for r in scheduler.replicas(of: q.serviceID) where servers[r.id] != nil {
                let finishes = (inReplica[r.id] ?? []).map(\.finish).filter { $0 > t }.sorted()
                let room = finishes.count < cap[q.serviceID]! ? t : finishes[finishes.count - cap[q.serviceID]!]
                if room < bestAt || (room == bestAt && finishes.count < bestLoad) { best = r.id; bestAt = room; bestLoad = finishes.count }
            }
            guard let rep = best, bestAt.isFinite else { waitingRequests[q.serviceID, default: []].append(q); return }
            if let node = scheduler.state.replicas[rep]?.placement.nodeID, silent.contains(node) {
                inReplica[rep, default: []].append((q, t, .infinity, .infinity))
                finishOf[q.id] = .infinity
                return
            }
            let (start, finish) = servers[rep]!.admit(at: bestAt, prefill: q.prefill, decode: q.decode)
            inReplica[rep, default: []].removeAll { $0.finish <= bestAt }
            inReplica[rep, default: []].append((q, bestAt, start, finish))
            finishOf[q.id] = finish
        }
        func serveRequests(until now: Double) {
            while nextRequest < options.requests.count && options.requests[nextRequest].arrival <= now {
                let q = options.requests[nextRequest]
                nextRequest += 1
                place(q, at: q.arrival)
            }
        }
        /// After a decision: servers for new replicas, lost replicas' requests elsewhere, waiting ones placed.
        func syncReplicas(at now: Double) {
            let live = Set(scheduler.state.replicas.keys)
            for id in servers.keys where !live.contains(id) {
                servers[id] = nil
                for x in inReplica.removeValue(forKey: id) ?? [] where x.finish > now { place(x.request, at: now) }
            }
            for r in scheduler.state.replicas.values where servers[r.id] == nil {
                if let m = inference[r.serviceID] { servers[r.id] = ReplicaServer(model: m, batch: scheduler.batchPerReplica[r.serviceID] ?? 1) }
            }
            for (svc, queue) in waitingRequests where !queue.isEmpty && scheduler.replicas(of: svc).contains(where: { servers[$0.id] != nil }) {
                waitingRequests[svc] = []
                for q in queue { place(q, at: now) }
            }
            // What the coordinator's router would report: requests it still holds (no replica, or
            // every one full) that arrived more than a quarter of the SLO ago.
            var backlog: [String: Int] = [:]
            for s in scheduler.services {
                let old = now - s.sloSeconds / 4
                var n = waitingRequests[s.id]?.filter { $0.arrival <= old }.count ?? 0
                for r in scheduler.replicas(of: s.id) { n += inReplica[r.id]?.filter { $0.sent > now && $0.request.arrival <= old }.count ?? 0 }
                if n > 0 { backlog[s.id] = n }
            }
            scheduler.backlog = backlog
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
            if requestLevel {
                serveRequests(until: now)
                syncReplicas(at: now)
                dirty = scheduler.services.contains { scheduler.desiredReplicas($0, at: now) > scheduler.replicas(of: $0.id).count }
            }
            for ev in batch {
                events += 1
                switch ev {
                case .arrival(let i):
                    scheduler.state.submit(workload.jobs[i]); submitted += 1; dirty = true
                case .serviceChange:
                    dirty = true
                case .started(let id, let g):
                    guard generation[id, default: 0] == g, let r = runs[id] else { continue }
                    if r.rate <= 0 {
                        endRun(id, now)
                        scheduler.state.failedStart(job: id, at: now)
                        dirty = true
                    } else {
                        queue.push(now + max((scheduler.state.jobs[id]!.spec.work - r.resume) / r.rate, 0), .done(id, g))
                        queue.push(now + options.reportInterval, .report(id, g))
                    }
                case .done(let id, let g):
                    guard generation[id, default: 0] == g else { continue }
                    if options.reportLatency > 0 { queue.push(now + options.reportLatency, .released(id, g, now)); continue }
                    endRun(id, now)
                    scheduler.state.finish(job: id, at: now)
                    lastFinish = max(lastFinish, now)
                    dirty = true
                case .released(let id, let g, let at):
                    guard generation[id, default: 0] == g else { continue }
                    endRun(id, now)
                    scheduler.state.finish(job: id, at: at)
                    lastFinish = max(lastFinish, at)
                    dirty = true
                case .report(let id, let g):
                    guard generation[id, default: 0] == g, var r = runs[id] else { continue }
                    // As a GPU agent measures it: the mean step time over the interval's steps, with
                    // the step-to-step variance Vidur measured (so the error shrinks as 1/√steps).
                    let cv = execution.stepTimeCV(r.key.gpuModel)
                    let steps = execution.stepTime(r.key).map { max(1, (options.reportInterval / $0).rounded()) } ?? 1
                    let z = MeasurementNoise.normal(job: id, key: r.key, run: r.resume, index: r.measurements)
                    r.measurements += 1
                    runs[id] = r
                    let measured = r.rate / max(0.05, 1 + cv * z / steps.squareRoot())
                    scheduler.kb.recordOnline(r.key, throughput: measured, unit: scheduler.state.jobs[id]!.spec.unit, stepTime: nil)
                    let w = workNow(id, now)!
                    scheduler.state.progress(job: id, workDone: w, checkpointed: execution.checkpointed(resume: r.resume, ranFor: now - r.progressFrom, rate: r.rate))
                    queue.push(now + options.reportInterval, .report(id, g))
                case .nodeCrash(let node):
                    if requestLevel {
                        silent.insert(node)
                        for r in scheduler.state.replicas.values where r.placement.nodeID == node {
                            inReplica[r.id] = inReplica[r.id]?.map { x in
                                guard x.finish > now else { return x }
                                finishOf[x.request.id] = .infinity
                                return (x.request, x.sent, .infinity, .infinity)
                            }
                        }
                    }
                    // Work stops here; the scheduler still believes the node alive until .nodeDown.
                    for (id, r) in runs where r.nodeID == node && !crashedRuns.contains(id) {
                        let w = workNow(id, now)!
                        let c = execution.checkpointed(resume: r.resume, ranFor: now - r.progressFrom, rate: r.rate)
                        scheduler.state.progress(job: id, workDone: min(w, c), checkpointed: c)
                        crashedRuns.insert(id)
                        generation[id, default: 0] += 1   // its finish and report events no longer count
                    }
                case .nodeDown(let node):
                    for (id, r) in runs where r.nodeID == node && !crashedRuns.contains(id) {
                        let w = workNow(id, now)!
                        scheduler.state.progress(job: id, workDone: w, checkpointed: execution.checkpointed(resume: r.resume, ranFor: now - r.progressFrom, rate: r.rate))
                    }
                    let lost = scheduler.state.nodeFailed(node, at: now)
                    for id in lost.jobs { endRun(id, now) }
                    dirty = true
                case .nodeUp(let node):
                    silent.remove(node)
                    scheduler.state.nodeRecovered(node); dirty = true
                }
            }
            if dirty {
                let actions = scheduler.step(now: now, currentWork: { workNow($0, now) })
                for a in actions {
                    switch a {
                    case .startJob(let id, let p, let resume):
                        let g = generation[id, default: 0]
                        let spec = scheduler.state.jobs[id]!.spec
                        let overhead = execution.restartSeconds(spec) + options.startLatency
                        runs[id] = Run(generation: g, key: p.key, nodeID: p.nodeID, startedAt: now, overhead: overhead, resume: resume, rate: execution.rate(p.key), total: spec.work)
                        queue.push(now + overhead, .started(id, g))
                    case .preemptJob(let id, _, _):
                        endRun(id, now)
                    case .startReplica, .stopReplica:
                        break
                    }
                }
                if requestLevel { syncReplicas(at: now) }
            }
            if submitted == workload.jobs.count && scheduler.state.unfinishedCount == 0
                && (!requestLevel || nextRequest >= options.requests.count) { break }
        }
        if requestLevel {
            // Requests still arriving after the last job: serve them on the replicas left.
            serveRequests(until: .infinity)
            for s in scheduler.services {
                var latencies: [Double] = [], within = 0
                for q in options.requests where q.serviceID == s.id {
                    let l = (finishOf[q.id] ?? .infinity) - q.arrival
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
        return RunResult(policy: policy.name, workload: workload.name, engine: "twin", emulated: true, jobs: states.map(\.outcome),
                         services: serviceOut.values.sorted { $0.id < $1.id }, busyGPUSeconds: busy, gpusByModel: gpus,
                         makespan: max(lastFinish - firstArrival, 0), skipped: skipped, events: events,
                         wallSeconds: Double(DispatchTime.now().uptimeNanoseconds - wallStart) / 1e9)
    }
}
