import Foundation

/// What the scheduler asks the cluster to do. The coordinator turns these into commands to GPU
/// agents; the digital twin applies them to its modelled agents.
public enum SchedulerAction: Sendable, Equatable {
    case startJob(jobID: String, placement: Placement, resumeWork: Double)
    case preemptJob(jobID: String, nodeID: String, reason: String)
    case startReplica(replicaID: String, serviceID: String, placement: Placement)
    case stopReplica(replicaID: String, serviceID: String, nodeID: String)
    /// Scale-down by migration: the replica takes no new requests and its requests move elsewhere;
    /// it keeps its GPUs until it is empty (`retirable`), then stops.
    case retireReplica(replicaID: String, serviceID: String, nodeID: String)
}

/// A service whose capacity per replica could not be derived (no profile for its model and GPU).
public struct SkippedService: Sendable, Equatable { public var id: String; public var reason: String }

/// One scheduling engine: the cluster state, the knowledge base and a policy. Online services are
/// served first (they hold priority and take GPUs back from offline jobs, which are preempted at
/// a checkpoint); the policy then places queued offline jobs on what is free.
public struct Scheduler: Sendable {
    public let policy: SchedulingPolicy
    public var state = ClusterState()
    public var kb: KnowledgeBase
    public private(set) var services: [ServiceSpec] = []
    public private(set) var capacityPerReplica: [String: Double] = [:]
    /// Requests a replica batches at its operating point (largest batch under the SLO that fits).
    public private(set) var batchPerReplica: [String: Int] = [:]
    public private(set) var skippedServices: [SkippedService] = []
    public private(set) var rejectedDecisions: [String] = []
    public var counts = [1, 2, 4, 8]
    public var window = 128
    private var replicaSerial = 0

    public init(policy: SchedulingPolicy, kb: KnowledgeBase, services: [ServiceSpec] = []) {
        self.policy = policy
        self.kb = kb
        for s in services.sorted(by: { $0.id < $1.id }) { addService(s) }
    }

    /// What a replica of `s` is planned on: its profile, with its offloaded layers streamed at
    /// `weightLinkBytesPerSecond` when the service offloads weights and they do not fit.
    public func plannedModel(_ s: ServiceSpec) -> InferenceModel? {
        guard var model = InferenceModel(kb: kb, model: s.model, gpuModel: s.gpuModel, tensorParallel: s.gpusPerReplica) else { return nil }
        model.memoryUtilization = s.gpuMemoryUtilization
        guard s.offloadWeights, let plan = WeightOffloadPlan.plan(arch: model.arch, gpu: model.gpu, tensorParallel: s.gpusPerReplica) else { return model }
        let link = TierFigures(kind: "link", bandwidthBytesPerSecond: weightLinkBytesPerSecond, latencySeconds: 0)
        return model.offloadingWeights(plan, streamSeconds: plan.streamSeconds(tier: link, linkBytesPerSecond: weightLinkBytesPerSecond, linkLatencySeconds: 0))
    }
    /// For planning only (capacity, batch): the bandwidth offloaded weights are assumed to stream
    /// at, the GPU nodes' link to the memory hosts; agents stream at the tier's measured figures.
    public var weightLinkBytesPerSecond = 12.5e9

    public mutating func addService(_ s: ServiceSpec) {
        guard let model = plannedModel(s) else {
            let profiled = Set(kb.offline.keys.filter { $0.task == "inference" && $0.model == (ModelCatalog.model(named: s.model)?.name ?? s.model) }
                .map { "\($0.gpuCount)x\($0.gpuModel)" }).sorted()
            skippedServices.append(SkippedService(id: s.id, reason: "no inference profile for \(s.model) on \(s.gpusPerReplica)x\(s.gpuModel)"
                + (profiled.isEmpty ? " (none for that model at all)" : " (profiled on: \(profiled.joined(separator: ", ")))")))
            return
        }
        if model.gpuWeightBytes > model.usableGPUBytes {
            skippedServices.append(SkippedService(id: s.id, reason: "\(s.model) (\(Int(model.arch.weightBytes / 1e9)) GB of weights) does not fit \(s.gpusPerReplica)x\(s.gpuModel)"
                + (s.gpuMemoryUtilization == InferenceModel.defaultMemoryUtilization ? "" : " at gpu_memory_utilization \(s.gpuMemoryUtilization)")
                + "; offload its weights to a memory tier (`weights: offload`) or use more GPUs"))
            return
        }
        guard let op = model.operatingPoint(prefill: s.meanPrefillTokens, decode: s.meanDecodeTokens, slo: s.sloSeconds) else {
            skippedServices.append(SkippedService(id: s.id, reason: "\(s.model) on \(s.gpusPerReplica)x\(s.gpuModel) cannot meet a \(s.sloSeconds) s SLO or does not fit"))
            return
        }
        services.append(s)
        capacityPerReplica[s.id] = op.requestsPerSecond
        batchPerReplica[s.id] = op.batch
    }

    /// Puts back a replica the coordinator had placed before it restarted; later replica ids
    /// continue after it.
    @discardableResult
    public mutating func restoreReplica(_ r: ReplicaRecord) -> Bool {
        if let n = r.id.split(separator: "-").last.flatMap({ $0.hasPrefix("r") ? Int($0.dropFirst()) : nil }) { replicaSerial = max(replicaSerial, n) }
        return state.restoreReplica(r)
    }

    /// The next time a service's rate changes after `t` (a decision is due then), or nil.
    public func nextRateChange(after t: Double) -> Double? {
        services.flatMap { $0.rateCurve.map(\.time) }.filter { $0 > t }.min()
    }

    /// Requests of a service that have waited for a replica for a while (the testbed's router
    /// reports it; the twin's fluid model has none).
    public var backlog: [String: Int] = [:]
    /// A service keeps a replica it no longer needs this long (trace seconds) before stopping it,
    /// as autoscalers' stabilisation windows do, so a passing dip does not stop a replica that
    /// the next burst needs again.
    public var scaleDownAfter = 120.0
    /// Since when each service has wanted fewer replicas than it has.
    private var overSince: [String: Double] = [:]

    /// Replicas for the rate now, plus enough to serve the backlog within one SLO.
    public func desiredReplicas(_ s: ServiceSpec, at now: Double) -> Int {
        guard let cap = capacityPerReplica[s.id], cap > 0 else { return 0 }
        let extra = Double(backlog[s.id] ?? 0) / s.sloSeconds
        return max(s.minReplicas, Int(((s.rate(at: now) + extra) / cap).rounded(.up)))
    }

    public func replicas(of service: String) -> [ReplicaRecord] {
        state.replicas.values.filter { $0.serviceID == service }.sorted { $0.id < $1.id }
    }

    // MARK: scale-down by migration

    /// Whether a replica no longer needed is emptied by migration before it stops (the
    /// coordinator's and the twin's migration policy moves requests) rather than stopped at once
    /// (its requests then go back to the queue and start over elsewhere).
    public var retireByMigration = false
    /// Replicas being emptied, and since when (trace seconds).
    public private(set) var retiring: [String: Double] = [:]
    /// A retiring replica stops after this long even if requests remain (they go back to the queue).
    public var retireDeadline = 120.0

    /// Retiring replicas to stop now: empty (`isEmpty`), or past the deadline. Forgets replicas
    /// that are gone meanwhile (their node died).
    public mutating func retirable(now: Double, isEmpty: (String) -> Bool) -> [String] {
        for id in retiring.keys where state.replicas[id] == nil { retiring[id] = nil }
        return retiring.filter { isEmpty($0.key) || now - $0.value >= retireDeadline }.keys.sorted()
    }

    /// The replica is stopping: its GPUs are free.
    public mutating func retired(_ id: String) {
        retiring[id] = nil
        state.stopReplica(id)
    }

    /// One decision round at `now`. `currentWork` gives a running job's work done right now (the
    /// twin computes it; the coordinator answers with the last report and corrects it when the
    /// agent acknowledges the preemption with its checkpoint).
    /// Elastic jobs shrunk (restarted on fewer GPUs) to make room for services.
    public private(set) var shrinks = 0

    public mutating func step(now: Double, currentWork: (String) -> Double? = { _ in nil }) -> [SchedulerAction] {
        var actions = serveOnline(now: now, currentWork: currentWork)
        guard state.free.totalFree > 0, !state.pendingOrder.isEmpty else { return actions }
        var ctx = PolicyContext(now: now, free: state.free, pending: state.pendingJobs, kb: kb, learnedNoFit: state.learnedNoFit)
        ctx.counts = counts
        ctx.window = window
        ctx.offlineVisible = policy.knowledge == .offline || policy.knowledge == .hybrid
        ctx.onlineVisible = policy.knowledge == .online || policy.knowledge == .hybrid
        for d in policy.schedule(&ctx) {
            do {
                let resume = state.jobs[d.jobID]?.workDone ?? 0
                let p = try state.start(job: d.jobID, node: d.nodeID, key: d.key, at: now)
                actions.append(.startJob(jobID: d.jobID, placement: p, resumeWork: resume))
            } catch {
                rejectedDecisions.append("\(policy.name) at \(now): \(d): \(error)")
            }
        }
        return actions
    }

    private mutating func serveOnline(now: Double, currentWork: (String) -> Double?) -> [SchedulerAction] {
        var actions: [SchedulerAction] = []
        for s in services {
            let want = desiredReplicas(s, at: now)
            var have = replicas(of: s.id).filter { retiring[$0.id] == nil }
            if have.count > want {
                let since = overSince[s.id] ?? now
                overSince[s.id] = since
                if now - since < scaleDownAfter { continue }
            }
            overSince[s.id] = nil
            while have.count > want, let r = have.popLast() {
                if retireByMigration {
                    retiring[r.id] = now
                    actions.append(.retireReplica(replicaID: r.id, serviceID: s.id, nodeID: r.placement.nodeID))
                } else {
                    state.stopReplica(r.id)
                    actions.append(.stopReplica(replicaID: r.id, serviceID: s.id, nodeID: r.placement.nodeID))
                }
            }
            let key = ConfigKey(model: s.model, task: "inference", gpuModel: s.gpuModel, gpuCount: s.gpusPerReplica, batchPerGPU: 0)
            for _ in have.count..<max(want, have.count) {
                var node = spreadNode(model: s.gpuModel, count: s.gpusPerReplica, service: s.id)
                var shrunk: [(String, ConfigKey)] = []
                if node == nil {
                    if let room = makeRoom(model: s.gpuModel, gpus: s.gpusPerReplica, now: now, for: s.id, currentWork: currentWork, actions: &actions) {
                        node = room.node
                        shrunk = room.shrink
                    }
                }
                guard let node else { break }
                replicaSerial += 1
                let id = "\(s.id)-r\(replicaSerial)"
                if let p = try? state.startReplica(id: id, service: s.id, node: node, key: key) {
                    actions.append(.startReplica(replicaID: id, serviceID: s.id, placement: p))
                }
                // Elastic jobs taken back go on at once on what is left of the node, smaller.
                for (job, smaller) in shrunk {
                    let resume = state.jobs[job]?.workDone ?? 0
                    if let p = try? state.start(job: job, node: node, key: smaller, at: now) {
                        actions.append(.startJob(jobID: job, placement: p, resumeWork: resume))
                        shrinks += 1
                    }
                }
            }
        }
        return actions
    }

    /// A node with `count` free GPUs of `model`, preferring the tightest fit among nodes that hold
    /// no replica of `service` yet, so one node's failure takes as few of its replicas as it can.
    func spreadNode(model: String, count: Int, service: String) -> String? {
        let used = Set(replicas(of: service).map(\.placement.nodeID))
        var best: (id: String, free: Int)?
        for id in state.nodeOrder where !used.contains(id) {
            guard let n = state.nodes[id], n.alive, n.gpuModel == model else { continue }
            let free = n.freeCount
            if free >= count && (best == nil || free < best!.free) { best = (id, free) }
        }
        return best?.id ?? state.free.bestNode(model: model, count: count)
    }

    /// The largest smaller configuration of an elastic job that fits in `left` GPUs and in memory
    /// (per the knowledge base), or nil.
    func shrunkKey(_ j: JobRecord, left: Int) -> ConfigKey? {
        guard j.spec.elastic, let k = j.placement?.key, left >= 1 else { return nil }
        var n = min(left, k.gpuCount - 1)
        while n >= 1 {
            var c = k
            c.gpuCount = n
            if let row = kb.offline[c] ?? kb.online[c], row.fits { return c }
            n -= 1
        }
        return nil
    }

    /// Takes GPUs back from offline jobs on a node of `model`: one that holds no replica of the
    /// service yet if it can (a node's failure should take as few of them as it can), then the one
    /// where the fewest GPUs must be taken. An elastic job shrinks instead of stopping when a
    /// smaller configuration of it fits in what the service leaves (it restarts from its
    /// checkpoint on fewer GPUs of the same node); other jobs are preempted at a checkpoint and
    /// queue again.
    private mutating func makeRoom(model: String, gpus: Int, now: Double, for service: String, currentWork: (String) -> Double?, actions: inout [SchedulerAction]) -> (node: String, shrink: [(String, ConfigKey)])? {
        var best: (node: String, victims: [JobRecord], taken: Int, spread: Int)? = nil
        let used = Set(replicas(of: service).map(\.placement.nodeID))
        for id in state.nodeOrder {
            guard let n = state.nodes[id], n.alive, n.gpuModel == model, n.gpuCount >= gpus else { continue }
            let jobIDs = Set(n.holders.compactMap { $0 }).filter { state.jobs[$0] != nil }
            let jobs = jobIDs.compactMap { state.jobs[$0] }.sorted { ($0.startedAt ?? 0, $0.spec.id) > ($1.startedAt ?? 0, $1.spec.id) }
            var freeNow = n.freeCount, victims: [JobRecord] = [], taken = 0
            for j in jobs where freeNow < gpus {
                victims.append(j); freeNow += j.placement?.gpus.count ?? 0; taken += j.placement?.gpus.count ?? 0
            }
            guard freeNow >= gpus else { continue }
            // Nodes without a replica of this service first (spread), then the fewest GPUs taken.
            let spread = used.contains(id) ? 1 : 0
            if best == nil || (spread, taken) < (best!.spread, best!.taken) { best = (id, victims, taken, spread) }
        }
        guard let best else { return nil }
        var shrink: [(String, ConfigKey)] = []
        // GPUs left for the victims once the replica has what it needs, handed out newest first.
        var left = (state.nodes[best.node]?.freeCount ?? 0) + best.taken - gpus
        for v in best.victims {
            let smaller = shrunkKey(v, left: left)
            state.preempt(job: v.spec.id, workDone: currentWork(v.spec.id), at: now)
            actions.append(.preemptJob(jobID: v.spec.id, nodeID: best.node,
                                       reason: "service \(service) needs \(gpus)x\(model)" + (smaller.map { "; shrinks to \($0.gpuCount) GPUs" } ?? "")))
            if let c = smaller { shrink.append((v.spec.id, c)); left -= c.gpuCount }
        }
        return (best.node, shrink)
    }
}
