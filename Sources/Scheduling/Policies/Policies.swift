import Foundation

/// `fifo` — knows nothing. Runs jobs in arrival order exactly as asked (GPU model and count; any
/// model when none was asked); when the head of the queue cannot start, nothing behind it starts.
public struct FIFOPolicy: SchedulingPolicy {
    public init() {}
    public var name: String { "fifo" }
    public var knowledge: KnowledgeUse { .none }
    public var summary: String { "Arrival order, the configuration the user asked for, head-of-line blocking. Uninformed baseline." }

    public func schedule(_ ctx: inout PolicyContext) -> [JobDecision] {
        var out: [JobDecision] = []
        for job in ctx.pending {
            guard ctx.free.totalFree > 0 else { break }
            let models = job.spec.requestedGPUModel.map { [$0] } ?? ctx.free.models
            let model = models.first { ctx.free.bestNode(model: $0, count: job.spec.requestedGPUs) != nil }
            guard let model, let d = ctx.place(job, ctx.key(job, model, job.spec.requestedGPUs)) else { break }
            out.append(d)
        }
        return out
    }
}

/// `db-fifo` — offline knowledge, FIFO order. For the head of the queue, the configuration (GPU
/// model, up to the GPUs asked for) with the highest throughput among those free now; a job
/// that cannot start blocks the queue, which keeps the order fair and the tail short.
public struct DBFIFOPolicy: SchedulingPolicy {
    public init() {}
    public var name: String { "db-fifo" }
    public var knowledge: KnowledgeUse { .offline }
    public var summary: String { "Arrival order; the knowledge base picks the fastest free configuration within the GPUs asked for." }

    public func schedule(_ ctx: inout PolicyContext) -> [JobDecision] {
        var out: [JobDecision] = []
        for job in ctx.pending {
            guard ctx.free.totalFree > 0 else { break }
            var best: (ConfigKey, Double)? = nil
            for model in ctx.free.models {
                for n in ctx.counts where n <= max(job.spec.requestedGPUs, 1) && ctx.free.bestNode(model: model, count: n) != nil {
                    let k = ctx.key(job, model, n)
                    guard let t = ctx.offline(k), t > 0 else { continue }
                    if best == nil || t > best!.1 { best = (k, t) }
                }
            }
            guard let (k, _) = best, let d = ctx.place(job, k) else { break }
            out.append(d)
        }
        return out
    }
}

/// Helpers shared by the packing policies.
enum Packing {
    /// Throughput per GPU relative to the job's best single-GPU throughput on any model of the
    /// cluster: 1 = as efficient as the job can be.
    static func efficiency(_ t: Double, count: Int, reference: Double) -> Double { t / (Double(count) * reference) }

    static func reference(_ ctx: PolicyContext, _ job: JobRecord, estimate: (ConfigKey) -> Double?) -> Double? {
        var best: Double? = nil
        for m in ctx.free.models {
            for n in ctx.counts {
                if let t = estimate(ctx.key(job, m, n)), t > 0 {
                    let perGPU = t / Double(n)
                    if best == nil || perGPU > best! { best = perGPU }
                }
            }
        }
        return best
    }

    /// Greedy bin-packing: every (job, configuration) pair in the window scored, best first; a
    /// job gets its best-scoring configuration that still has room.
    static func pack(_ ctx: inout PolicyContext, maxCount: (JobRecord) -> Int,
                     estimate: (ConfigKey) -> Double?, score: (JobRecord, ConfigKey, Double, Double) -> Double) -> [JobDecision] {
        guard ctx.free.totalFree > 0 else { return [] }
        var candidates: [(score: Double, order: Int, job: JobRecord, key: ConfigKey)] = []
        var references: [JobKind: Double?] = [:]
        let roomy = ctx.free.models.map { ($0, ctx.free.largestFree(model: $0)) }.filter { $0.1 > 0 }
        for (order, job) in ctx.pending.prefix(ctx.window).enumerated() {
            if references[job.spec.kind] == nil { references[job.spec.kind] = reference(ctx, job, estimate: estimate) }
            guard let ref = references[job.spec.kind]! else { continue }
            for (m, largest) in roomy {
                for n in ctx.counts where n <= maxCount(job) && n <= largest {
                    let k = ctx.key(job, m, n)
                    guard !ctx.knownNoFit(job, k), let t = estimate(k), t > 0 else { continue }
                    candidates.append((score(job, k, t, ref), order, job, k))
                }
            }
        }
        candidates.sort { ($0.score, -$0.order) > ($1.score, -$1.order) }
        var placed = Set<String>(), out: [JobDecision] = []
        for c in candidates where !placed.contains(c.job.spec.id) {
            guard ctx.free.totalFree > 0 else { break }
            if let d = ctx.place(c.job, c.key) { out.append(d); placed.insert(c.job.spec.id) }
        }
        return out
    }

    /// Second pass: while GPUs stay free on a node, grow the jobs just placed there to the next
    /// count if the estimate says that raises their throughput.
    static func scaleUp(_ ctx: inout PolicyContext, _ decisions: [JobDecision], jobs: [String: JobRecord], estimate: (ConfigKey) -> Double?) -> [JobDecision] {
        var out = decisions
        var grew = true
        while grew {
            grew = false
            for i in out.indices {
                let d = out[i]
                guard let job = jobs[d.jobID], let next = ctx.counts.first(where: { $0 > d.key.gpuCount }) else { continue }
                let extra = next - d.key.gpuCount
                guard ctx.free.freeOn(d.nodeID) >= extra else { continue }
                let k = ctx.key(job, d.key.gpuModel, next)
                guard !ctx.knownNoFit(job, k), let now = estimate(d.key), let bigger = estimate(k), bigger > now * 1.05 else { continue }
                ctx.free.take(d.nodeID, extra)
                out[i].key = k
                grew = true
            }
        }
        return out
    }
}

/// `db-flat` — offline knowledge, bin-packing across the queue. Compares every queued job's
/// configurations by efficiency (throughput per GPU relative to the job's best), within the GPUs
/// asked for, and packs the most efficient first: many jobs run at once, short queueing.
public struct DBFlatPolicy: SchedulingPolicy {
    public init() {}
    public var name: String { "db-flat" }
    public var knowledge: KnowledgeUse { .offline }
    public var summary: String { "Bin-packs the queue by per-GPU efficiency from the knowledge base (GPUs asked for as a cap)." }

    public func schedule(_ ctx: inout PolicyContext) -> [JobDecision] {
        let c = ctx
        return Packing.pack(&ctx, maxCount: { max($0.spec.requestedGPUs, 1) }, estimate: { c.offline($0) },
                            score: { _, k, t, ref in Packing.efficiency(t, count: k.gpuCount, reference: ref) })
    }
}

/// `db-flat-scale` — offline knowledge, maximises total throughput. Packs like `db-flat`, then
/// grows the jobs it placed onto GPUs that would otherwise stay idle, as far as the knowledge
/// base says they still speed up (beyond the GPUs asked for, up to a full node).
public struct DBFlatScalePolicy: SchedulingPolicy {
    public init() {}
    public var name: String { "db-flat-scale" }
    public var knowledge: KnowledgeUse { .offline }
    public var summary: String { "Packs by efficiency, then scales placed jobs onto idle GPUs while throughput still grows (knowledge base)." }

    public func schedule(_ ctx: inout PolicyContext) -> [JobDecision] {
        let c = ctx
        let placed = Packing.pack(&ctx, maxCount: { max($0.spec.requestedGPUs, 1) }, estimate: { c.offline($0) },
                                  score: { _, k, t, ref in Packing.efficiency(t, count: k.gpuCount, reference: ref) })
        guard ctx.pending.count <= placed.count else { return placed }   // grow only when nobody waits
        var byID: [String: JobRecord] = [:]
        for j in ctx.pending { byID[j.spec.id] = j }
        return Packing.scaleUp(&ctx, placed, jobs: byID, estimate: { c.offline($0) })
    }
}

/// Online estimate of a configuration for policies that learn at run time: the measured rate
/// where this configuration ran; else the job's best measured rate per GPU on that model scaled
/// linearly to the count; else, on a model where the job never ran, its best per-GPU rate on any
/// model (optimism under uncertainty, so unexplored GPU types get tried and measured); nil when
/// the job kind never ran anywhere.
func onlineEstimate(_ ctx: PolicyContext, _ key: ConfigKey) -> Double? {
    if let r = ctx.online(key) { return r.throughput }
    var onModel: Double? = nil, anywhere: Double? = nil
    for m in ctx.free.models {
        for n in ctx.counts {
            var k = key; k.gpuModel = m; k.gpuCount = n
            guard let r = ctx.online(k) else { continue }
            let per = r.throughput / Double(n)
            anywhere = max(anywhere ?? 0, per)
            if m == key.gpuModel { onModel = max(onModel ?? 0, per) }
        }
    }
    return (onModel ?? anywhere).map { $0 * Double(key.gpuCount) }
}

/// `sia-unaware` / `sia-aware` — learn throughput online, Sia-style (goodput-driven placement with
/// exploration). Unaware knows nothing before a job runs: a configuration never seen is explored
/// on one GPU of the least-explored model, and may turn out not to fit (the start fails and that
/// is learned). Aware knows from the knowledge base which configurations fit, and explores only
/// those. Both then pack by learned efficiency, within the GPUs asked for.
public struct SiaPolicy: SchedulingPolicy {
    public let aware: Bool
    public init(aware: Bool) { self.aware = aware }
    public var name: String { aware ? "sia-aware" : "sia-unaware" }
    public var knowledge: KnowledgeUse { aware ? .hybrid : .online }
    public var summary: String {
        aware ? "Online-learned throughputs, exploring only configurations the knowledge base says fit; packs by learned efficiency."
              : "Online-learned throughputs only; explores unseen configurations (1 GPU, least-explored model), packs by learned efficiency."
    }

    func viable(_ ctx: PolicyContext, _ k: ConfigKey) -> Bool {
        guard aware else { return true }
        if let r = ctx.kb.offline[k] { return r.fits }
        return false
    }

    public func schedule(_ ctx: inout PolicyContext) -> [JobDecision] {
        var out: [JobDecision] = []
        var explored = Set<String>()
        // Exploration first: jobs whose kind has nothing learned on any free model.
        for job in ctx.pending.prefix(ctx.window) {
            guard ctx.free.totalFree > 0 else { break }
            let models = ctx.free.models.filter { m in
                ctx.counts.allSatisfy { ctx.online(ctx.key(job, m, $0)) == nil }
            }
            let known = ctx.free.models.contains { m in ctx.counts.contains { ctx.online(ctx.key(job, m, $0)) != nil } }
            if known { continue }
            for m in models {
                guard let n = ctx.counts.first(where: { n in
                    let k = ctx.key(job, m, n)
                    return n <= max(job.spec.requestedGPUs, 1) && !ctx.knownNoFit(job, k) && viable(ctx, k)
                }) else { continue }
                if let d = ctx.place(job, ctx.key(job, m, n)) { out.append(d); explored.insert(job.spec.id); break }
            }
        }
        var rest = ctx.with(pending: ctx.pending.filter { !explored.contains($0.spec.id) })
        let r = rest
        let packed = Packing.pack(&rest, maxCount: { max($0.spec.requestedGPUs, 1) },
                                  estimate: { k in (self.aware && !self.viable(r, k)) ? nil : onlineEstimate(r, k) },
                                  score: { _, k, t, ref in Packing.efficiency(t, count: k.gpuCount, reference: ref) })
        ctx.free = rest.free
        return out + packed
    }
}

/// `hybrid` — ours: offline and online knowledge together.
/// - Estimate: the offline row as a prior, corrected by the online rate with weight n/(n+2) after
///   n reports, so a wrong or estimated row stops misleading after a few reports.
/// - Order: shortest estimated remaining time first, aged by waiting time (a job's priority
///   doubles for every hour it waited beyond its own expected run time), so short jobs pass and
///   long ones still start.
/// - Placement: the most efficient configuration within the GPUs asked for (no memory surprises:
///   the knowledge base knows what fits); then, when no job waits, grows placed jobs onto idle GPUs.
public struct HybridPolicy: SchedulingPolicy {
    public init() {}
    public var name: String { "hybrid" }
    public var knowledge: KnowledgeUse { .hybrid }
    public var summary: String { "Offline prior corrected online; shortest-remaining-first with aging; efficient packing, growth onto idle GPUs." }

    static func estimate(_ ctx: PolicyContext, _ k: ConfigKey) -> Double? {
        let prior = ctx.offline(k)
        if prior == 0 { return nil }
        guard let on = ctx.online(k) else { return prior }
        guard let p = prior else { return on.throughput }
        let w = Double(on.samples) / Double(on.samples + 2)
        return w * on.throughput + (1 - w) * p
    }

    public func schedule(_ ctx: inout PolicyContext) -> [JobDecision] {
        guard ctx.free.totalFree > 0 else { return [] }
        let c = ctx
        let est: (ConfigKey) -> Double? = { HybridPolicy.estimate(c, $0) }
        // Order the window by aged remaining time on the job's best configuration.
        func remaining(_ j: JobRecord) -> Double {
            var best = 0.0
            for m in c.free.models { for n in c.counts where n <= max(j.spec.requestedGPUs, 1) { if let t = est(c.key(j, m, n)) { best = max(best, t) } } }
            return best > 0 ? j.remainingWork / best : .infinity
        }
        let window = ctx.pending.prefix(ctx.window).map { j -> (Double, JobRecord) in
            let r = remaining(j)
            let waited = max(c.now - j.queuedSince, 0)
            return (r / (1 + waited / max(r, 1)), j)
        }.sorted { ($0.0, $0.1.spec.arrival, $0.1.spec.id) < ($1.0, $1.1.spec.arrival, $1.1.spec.id) }
        var ordered = ctx.with(pending: window.map(\.1))
        let rank = Dictionary(uniqueKeysWithValues: window.enumerated().map { ($0.element.1.spec.id, Double($0.offset)) })
        let count = Double(max(window.count, 1))
        // Score: efficiency, with a bonus for being early in the aged order.
        let placed = Packing.pack(&ordered, maxCount: { max($0.spec.requestedGPUs, 1) }, estimate: est,
                                  score: { j, k, t, ref in Packing.efficiency(t, count: k.gpuCount, reference: ref) + 0.5 * (1 - rank[j.spec.id]! / count) })
        ctx.free = ordered.free
        guard ctx.pending.count <= placed.count else { return placed }
        var byID: [String: JobRecord] = [:]
        for j in ctx.pending { byID[j.spec.id] = j }
        return Packing.scaleUp(&ctx, placed, jobs: byID, estimate: est)
    }
}
