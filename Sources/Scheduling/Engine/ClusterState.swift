/// Where a job or replica runs: a node, the GPU indices it holds there, and the configuration.
public struct Placement: Sendable, Codable, Equatable {
    public var nodeID: String
    public var gpus: [Int]
    public var key: ConfigKey
    public init(nodeID: String, gpus: [Int], key: ConfigKey) { self.nodeID = nodeID; self.gpus = gpus; self.key = key }
}

public enum JobPhase: String, Sendable, Codable { case pending, running, finished }

/// Everything the scheduler knows about one offline job.
public struct JobRecord: Sendable, Codable {
    public var spec: JobSpec
    public var phase: JobPhase = .pending
    public var placement: Placement?
    /// Work done as last reported (or computed by the twin).
    public var workDone: Double = 0
    /// Work safe in the last checkpoint: what a restart after a crash resumes from.
    public var checkpointedWork: Double = 0
    public var queuedSince: Double
    public var firstStart: Double?
    public var startedAt: Double?
    public var finishedAt: Double?
    public var queueingDelay: Double = 0
    public var preemptions = 0
    public var restarts = 0
    public var failedStarts = 0
    /// Configurations this job was seen not to fit (out of memory at start).
    public var noFit: [ConfigKey] = []
    /// The configuration it last ran on (kept after it finishes).
    public var lastKey: ConfigKey?
    /// Set when the job could not run at all (it failed to start `maxFailedStarts` times).
    public var failed = false

    public init(spec: JobSpec) { self.spec = spec; self.queuedSince = spec.arrival }
    public var remainingWork: Double { max(spec.work - workDone, 0) }
}

public struct NodeSlot: Sendable, Codable {
    public var id: String
    public var gpuModel: String
    public var gpuCount: Int
    public var alive: Bool
    /// Per GPU index, the job or replica holding it.
    public var holders: [String?]
    public init(id: String, gpuModel: String, gpuCount: Int, alive: Bool = true) {
        self.id = id; self.gpuModel = gpuModel; self.gpuCount = gpuCount; self.alive = alive
        self.holders = Array(repeating: nil, count: gpuCount)
    }
    public var freeCount: Int { holders.reduce(0) { $0 + ($1 == nil ? 1 : 0) } }
}

public struct ReplicaRecord: Sendable, Codable, Equatable {
    public var id: String
    public var serviceID: String
    public var placement: Placement
    public init(id: String, serviceID: String, placement: Placement) { self.id = id; self.serviceID = serviceID; self.placement = placement }
}

/// The scheduler's model of the cluster, shared by the coordinator and the digital twin: nodes and
/// which GPU index each job or replica holds, jobs and their progress, service replicas. Every
/// allocation goes through here, so no GPU is ever handed out twice.
public struct ClusterState: Sendable {
    public private(set) var nodes: [String: NodeSlot] = [:]
    public private(set) var nodeOrder: [String] = []
    public private(set) var jobs: [String: JobRecord] = [:]
    public private(set) var replicas: [String: ReplicaRecord] = [:]
    public private(set) var free = FreeGPUs(nodes: [])
    /// Pending job ids in queue order (arrival, then id).
    public private(set) var pendingOrder: [String] = []
    /// (job kind, GPU model, count) configurations seen not to fit, learned from failed starts.
    public private(set) var learnedNoFit: Set<ConfigKey> = []

    public init() {}

    // MARK: nodes

    public mutating func addNode(_ node: NodeSlot) {
        if nodes[node.id] == nil { nodeOrder.insert(node.id, at: FreeGPUs.position(node.id, in: nodeOrder)) }
        var n = node
        if let old = nodes[node.id], old.gpuCount == node.gpuCount { n.holders = old.holders }
        nodes[node.id] = n
        syncFree(node.id)
    }

    /// A node died: its jobs go back to the queue from their last checkpoint, its replicas are gone.
    /// Returns the ids of the jobs and replicas that were running there.
    @discardableResult
    public mutating func nodeFailed(_ id: String, at now: Double) -> (jobs: [String], replicas: [String]) {
        guard var node = nodes[id], node.alive else { return ([], []) }
        node.alive = false
        var lostJobs: [String] = [], lostReplicas: [String] = []
        for h in Set(node.holders.compactMap { $0 }).sorted() {
            if var j = jobs[h], j.phase == .running {
                j.workDone = j.checkpointedWork
                j.restarts += 1
                requeue(&j, at: now)
                jobs[h] = j
                lostJobs.append(h)
            } else if replicas[h] != nil {
                replicas[h] = nil
                lostReplicas.append(h)
            }
        }
        node.holders = Array(repeating: nil, count: node.gpuCount)
        nodes[id] = node
        syncFree(id)
        return (lostJobs, lostReplicas)
    }

    public mutating func nodeRecovered(_ id: String) {
        guard var node = nodes[id], !node.alive else { return }
        node.alive = true
        node.holders = Array(repeating: nil, count: node.gpuCount)
        nodes[id] = node
        syncFree(id)
    }

    /// Brings the free-GPU index in line with one node's holders (incremental: no pass over all nodes).
    private mutating func syncFree(_ id: String) {
        guard let n = nodes[id], n.alive else { free.remove(id); return }
        free.upsert(id, model: n.gpuModel, capacity: n.gpuCount, free: n.freeCount)
    }

    // MARK: jobs

    public mutating func submit(_ spec: JobSpec) {
        guard jobs[spec.id] == nil else { return }
        jobs[spec.id] = JobRecord(spec: spec)
        unfinishedCount += 1
        insertPending(spec.id)
    }

    /// Restores a job as persisted (coordinator restart).
    public mutating func restore(_ record: JobRecord) {
        if let old = jobs[record.spec.id], old.phase != .finished { unfinishedCount -= 1 }
        jobs[record.spec.id] = record
        if record.phase != .finished { unfinishedCount += 1 }
        if record.phase == .pending { insertPending(record.spec.id) }
        if record.phase == .running, let p = record.placement, var node = nodes[p.nodeID], node.alive {
            for g in p.gpus where g < node.gpuCount { node.holders[g] = record.spec.id }
            nodes[p.nodeID] = node
            syncFree(p.nodeID)
        }
    }

    private mutating func insertPending(_ id: String) {
        let key = { (j: JobRecord) in (j.spec.arrival, j.spec.id) }
        let k = key(jobs[id]!)
        var lo = 0, hi = pendingOrder.count
        while lo < hi { let m = (lo + hi) / 2; if key(jobs[pendingOrder[m]]!) < k { lo = m + 1 } else { hi = m } }
        pendingOrder.insert(id, at: lo)
    }

    private mutating func requeue(_ j: inout JobRecord, at now: Double) {
        if let p = j.placement { release(p, holder: j.spec.id) }
        j.phase = .pending
        j.placement = nil
        j.startedAt = nil
        j.queuedSince = now
        let id = j.spec.id
        jobs[id] = j
        insertPending(id)
    }

    public enum AllocationError: Error, CustomStringConvertible, Equatable {
        case unknownJob(String), notPending(String), unknownNode(String), nodeDead(String), notEnoughGPUs(String, Int, Int), wrongModel(String, String, String)
        public var description: String {
            switch self {
            case .unknownJob(let j): return "unknown job \(j)"
            case .notPending(let j): return "job \(j) is not pending"
            case .unknownNode(let n): return "unknown node \(n)"
            case .nodeDead(let n): return "node \(n) is dead"
            case .notEnoughGPUs(let n, let want, let have): return "node \(n) has \(have) free GPUs, \(want) asked"
            case .wrongModel(let n, let has, let want): return "node \(n) has \(has) GPUs, the configuration needs \(want)"
            }
        }
    }

    /// Starts a pending job on `count` free GPUs of `node` with configuration `key`.
    public mutating func start(job id: String, node nodeID: String, key: ConfigKey, at now: Double) throws -> Placement {
        guard var j = jobs[id] else { throw AllocationError.unknownJob(id) }
        guard j.phase == .pending else { throw AllocationError.notPending(id) }
        let gpus = try allocate(node: nodeID, count: key.gpuCount, model: key.gpuModel, holder: id)
        let p = Placement(nodeID: nodeID, gpus: gpus, key: key)
        j.phase = .running
        j.placement = p
        j.lastKey = key
        j.startedAt = now
        if j.firstStart == nil { j.firstStart = now }
        j.queueingDelay += now - j.queuedSince
        jobs[id] = j
        pendingOrder.removeAll { $0 == id }
        return p
    }

    private mutating func allocate(node nodeID: String, count: Int, model: String, holder: String) throws -> [Int] {
        guard var node = nodes[nodeID] else { throw AllocationError.unknownNode(nodeID) }
        guard node.alive else { throw AllocationError.nodeDead(nodeID) }
        guard node.gpuModel == model else { throw AllocationError.wrongModel(nodeID, node.gpuModel, model) }
        let freeIdx = node.holders.indices.filter { node.holders[$0] == nil }
        guard freeIdx.count >= count, count >= 1 else { throw AllocationError.notEnoughGPUs(nodeID, count, freeIdx.count) }
        let gpus = Array(freeIdx.prefix(count))
        for g in gpus { node.holders[g] = holder }
        nodes[nodeID] = node
        free.take(nodeID, count)
        return gpus
    }

    private mutating func release(_ p: Placement, holder: String) {
        guard var node = nodes[p.nodeID] else { return }
        var released = 0
        for g in p.gpus where g < node.gpuCount && node.holders[g] == holder { node.holders[g] = nil; released += 1 }
        nodes[p.nodeID] = node
        if node.alive && released > 0 { free.give(p.nodeID, released) }
    }

    /// Progress reported (or modelled) for a running job.
    public mutating func progress(job id: String, workDone: Double, checkpointed: Double) {
        guard var j = jobs[id], j.phase == .running else { return }
        j.workDone = min(max(j.workDone, workDone), j.spec.work)
        j.checkpointedWork = min(max(j.checkpointedWork, checkpointed), j.workDone)
        jobs[id] = j
    }

    /// Preempts a running job at a checkpoint: it keeps all its work and goes back to the queue.
    public mutating func preempt(job id: String, workDone: Double?, at now: Double) {
        guard var j = jobs[id], j.phase == .running else { return }
        if let w = workDone { j.workDone = min(max(j.workDone, w), j.spec.work) }
        j.checkpointedWork = j.workDone
        j.preemptions += 1
        requeue(&j, at: now)
    }

    /// A start failed because the configuration did not fit in memory: remember it, queue again.
    public mutating func failedStart(job id: String, at now: Double) {
        guard var j = jobs[id], j.phase == .running, let p = j.placement else { return }
        j.noFit.append(p.key)
        learnedNoFit.insert(p.key)
        j.failedStarts += 1
        if j.failedStarts >= ClusterState.maxFailedStarts {
            release(p, holder: id)
            j.placement = nil
            j.phase = .finished
            j.failed = true
            j.finishedAt = nil
            jobs[id] = j
            unfinishedCount -= 1
            return
        }
        requeue(&j, at: now)
    }

    public static let maxFailedStarts = 8

    /// A preempted job's agent reported the work in the checkpoint it took on the way out.
    public mutating func preemptedWork(job id: String, work: Double) {
        guard var j = jobs[id], j.phase == .pending else { return }
        let w = min(max(j.workDone, work), j.spec.work)
        j.workDone = w
        j.checkpointedWork = w
        jobs[id] = j
    }

    public mutating func finish(job id: String, at now: Double) {
        guard var j = jobs[id], j.phase == .running else { return }
        if let p = j.placement { release(p, holder: id) }
        j.workDone = j.spec.work
        j.checkpointedWork = j.spec.work
        j.phase = .finished
        j.finishedAt = now
        jobs[id] = j
        unfinishedCount -= 1
    }

    // MARK: replicas

    public mutating func startReplica(id: String, service: String, node: String, key: ConfigKey) throws -> Placement {
        let gpus = try allocate(node: node, count: key.gpuCount, model: key.gpuModel, holder: id)
        let p = Placement(nodeID: node, gpus: gpus, key: key)
        replicas[id] = ReplicaRecord(id: id, serviceID: service, placement: p)
        return p
    }

    /// A replica read back from the coordinator's store after a restart (dropped if its node is
    /// dead or its GPUs are taken: the scheduler then starts another).
    @discardableResult
    public mutating func restoreReplica(_ r: ReplicaRecord) -> Bool {
        guard var node = nodes[r.placement.nodeID], node.alive,
              r.placement.gpus.allSatisfy({ $0 < node.gpuCount && node.holders[$0] == nil }) else { return false }
        for g in r.placement.gpus { node.holders[g] = r.id }
        nodes[r.placement.nodeID] = node
        replicas[r.id] = r
        syncFree(r.placement.nodeID)
        return true
    }

    public mutating func stopReplica(_ id: String) {
        guard let r = replicas[id] else { return }
        release(r.placement, holder: id)
        replicas[id] = nil
    }

    // MARK: views

    public var pendingJobs: [JobRecord] { pendingOrder.compactMap { jobs[$0] } }
    public var runningJobs: [JobRecord] { jobs.values.filter { $0.phase == .running }.sorted { $0.spec.id < $1.spec.id } }
    public private(set) var unfinishedCount = 0

    /// Checks the invariants: every held GPU is held by a running job or a replica placed on exactly
    /// those indices, free counts agree, no index is held twice. Returns the violations.
    public func invariantViolations() -> [String] {
        var v: [String] = []
        var holderIndices: [String: [String: [Int]]] = [:]
        for id in nodeOrder {
            let n = nodes[id]!
            for (g, h) in n.holders.enumerated() { if let h { holderIndices[h, default: [:]][id, default: []].append(g) } }
            if n.alive && free.freeOn(id) != n.freeCount { v.append("node \(id): free index says \(free.freeOn(id)), holders say \(n.freeCount)") }
        }
        for j in jobs.values {
            let held = holderIndices[j.spec.id] ?? [:]
            switch j.phase {
            case .running:
                guard let p = j.placement else { v.append("running job \(j.spec.id) without placement"); continue }
                if held != [p.nodeID: p.gpus] { v.append("job \(j.spec.id) holds \(held), placement says \(p.nodeID) \(p.gpus)") }
                if p.gpus.count != p.key.gpuCount { v.append("job \(j.spec.id) holds \(p.gpus.count) GPUs for a \(p.key.gpuCount)-GPU configuration") }
            default:
                if !held.isEmpty { v.append("\(j.phase) job \(j.spec.id) holds GPUs \(held)") }
            }
            if j.workDone > j.spec.work + 1e-6 { v.append("job \(j.spec.id) did more work than it has") }
        }
        for r in replicas.values where (holderIndices[r.id] ?? [:]) != [r.placement.nodeID: r.placement.gpus] {
            v.append("replica \(r.id) holds \(holderIndices[r.id] ?? [:]), placement says \(r.placement.nodeID) \(r.placement.gpus)")
        }
        let pendingSet = Set(pendingOrder)
        if pendingSet.count != pendingOrder.count { v.append("a job is queued twice") }
        for j in jobs.values where (j.phase == .pending) != pendingSet.contains(j.spec.id) { v.append("job \(j.spec.id) is \(j.phase) but queued=\(pendingSet.contains(j.spec.id))") }
        return v
    }
}
