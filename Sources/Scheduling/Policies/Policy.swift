/// What a policy sees when it decides: the time, the free GPUs (which it updates as it places),
/// the queue, and knowledge — but each policy reads only the knowledge its name promises.
public struct PolicyContext {
    public let now: Double
    public var free: FreeGPUs
    public let pending: [JobRecord]
    public let kb: KnowledgeBase
    public let learnedNoFit: Set<ConfigKey>
    /// GPU counts a policy may choose from (those the knowledge base describes).
    public var counts: [Int] = [1, 2, 4, 8]
    /// Packing policies compare at most this many queued jobs per decision (queue order), so a
    /// decision stays cheap with a long queue.
    public var window = 128
    /// Which knowledge the policy may read (set from its `knowledge`).
    public var offlineVisible = true
    public var onlineVisible = true

    public init(now: Double, free: FreeGPUs, pending: [JobRecord], kb: KnowledgeBase, learnedNoFit: Set<ConfigKey>) {
        self.now = now; self.free = free; self.pending = pending; self.kb = kb; self.learnedNoFit = learnedNoFit
    }

    public func key(_ job: JobRecord, _ model: String, _ count: Int) -> ConfigKey {
        ConfigKey(model: job.spec.kind.model, task: job.spec.kind.task, gpuModel: model, gpuCount: count, batchPerGPU: job.spec.kind.batchPerGPU)
    }

    func knownNoFit(_ job: JobRecord, _ key: ConfigKey) -> Bool { learnedNoFit.contains(key) || job.noFit.contains(key) }

    /// Offline throughput (measured or estimated) when the configuration fits; nil when unknown;
    /// 0 when known not to fit.
    public func offline(_ key: ConfigKey) -> Double? {
        guard offlineVisible, let r = kb.offline[key] else { return nil }
        return r.fits ? r.throughput : 0
    }

    public func online(_ key: ConfigKey) -> PerfRow? { onlineVisible ? kb.online[key] : nil }

    /// A copy over another queue, keeping the knowledge visibility and limits.
    public func with(pending: [JobRecord]) -> PolicyContext {
        var c = PolicyContext(now: now, free: free, pending: pending, kb: kb, learnedNoFit: learnedNoFit)
        c.counts = counts; c.window = window; c.offlineVisible = offlineVisible; c.onlineVisible = onlineVisible
        return c
    }

    /// Places `key` on the best-fitting node and records it; nil when no node has room.
    public mutating func place(_ job: JobRecord, _ key: ConfigKey) -> JobDecision? {
        guard let node = free.bestNode(model: key.gpuModel, count: key.gpuCount) else { return nil }
        free.take(node, key.gpuCount)
        return JobDecision(jobID: job.spec.id, nodeID: node, key: key)
    }
}

public struct JobDecision: Sendable, Equatable, CustomStringConvertible {
    public var jobID: String
    public var nodeID: String
    public var key: ConfigKey
    public init(jobID: String, nodeID: String, key: ConfigKey) { self.jobID = jobID; self.nodeID = nodeID; self.key = key }
    public var description: String { "\(jobID) → \(nodeID) \(key.gpuCount)x\(key.gpuModel)" }
}

/// What a policy may know.
public enum KnowledgeUse: String, Sendable { case none, offline, online, hybrid }

/// A scheduling policy: pure code, deterministic, shared by the coordinator and the digital twin.
public protocol SchedulingPolicy: Sendable {
    var name: String { get }
    var knowledge: KnowledgeUse { get }
    /// The objective and the decisions, in a few lines.
    var summary: String { get }
    func schedule(_ ctx: inout PolicyContext) -> [JobDecision]
}

public enum Policies {
    public static let all: [SchedulingPolicy] = [
        FIFOPolicy(), DBFIFOPolicy(), DBFlatPolicy(), DBFlatScalePolicy(), SiaPolicy(aware: false), SiaPolicy(aware: true), HybridPolicy(),
    ]
    public static var names: [String] { all.map(\.name) }
    public static func named(_ name: String) -> SchedulingPolicy? { all.first { $0.name == name.lowercased() } }
}
