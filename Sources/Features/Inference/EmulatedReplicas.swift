import Cluster
import Foundation
import Protocol
import Scheduling

/// The inference replicas a GPU node serves, by emulation: each replica is a `ServingEngine`
/// (iteration-level continuous batching over paged KV blocks, iteration times from Vidur's
/// profiles in the knowledge base) stepped on the agent's wall clock scaled by the start command's
/// time scale. A request joins the engine when it reaches the agent, so everything before that
/// (the client, the coordinator's routing, the network) counts in its latency too; it is reported
/// once its emulated last token is out, with its time to first token and between tokens, and
/// repeated until the coordinator settles it. Results say `emulated`.
public final class EmulatedReplicas {
    let kb: KnowledgeBase

    struct Replica {
        var start: StartReplica
        var startedWall: Int64
        var engine: ServingEngine
        var gpus: Set<UInt32>
        /// The engine's KV blocks as real bytes (nil when the start command asks for none).
        var pool: KVBlockPool?
        /// Blocks the pool keeps for requests that are out of the engine but whose KV still
        /// matters here: a migration's source between the suspension and the destination's commit
        /// (to resume here if the destination fails), a destination's blocks as they arrive.
        var held: [String: Int] = [:]
        /// Requests that moved to another replica (a migration committed): a request sent here
        /// again (a coordinator restart re-sends unfinished requests) is not served twice.
        var movedAway: Set<String> = []
        var clock: TraceClock { TraceClock(zeroWall: startedWall, timeScale: start.timeScale) }
        /// KV swapped to or asked back from a memory host, for the swap target (`takeSwapWork`).
        /// Prompts' KV kept in the GPU's free blocks (automatic prefix caching).
        var local = GPUPrefixCache()
        var swapOuts: [SwapOut] = []
        var swapIns: [SwapIn] = []
        /// The pool follows the engine's blocks and what is held besides. A request swapped out to
        /// a memory host leaves it: its blocks' bytes are read out first, to be sent.
        mutating func syncPool() {
            for e in engine.takeSwapOuts() {
                var blocks: [[UInt8]] = []
                for b in 0..<e.blocks {
                    if let pool, (try? pool.read(e.id, blocks: b..<(b + 1), offset: 0, length: pool.blockBytes, into: { blocks.append(Array($0)) })) != nil { continue }
                    blocks.append(KVBlockPool.contents(request: e.id, block: b, bytes: pool?.blockBytes ?? 8))
                }
                swapOuts.append(SwapOut(replica: start.replicaID, id: e.id, tokens: e.tokens, blocks: blocks, at: e.at))
            }
            for e in engine.takeSwapIns() { swapIns.append(SwapIn(replica: start.replicaID, id: e.id, blocks: e.blocks, tokens: e.tokens, at: e.at)) }
            guard let pool else { return }
            pool.sync(held.isEmpty ? engine.blockCounts : engine.blockCounts.merging(held) { max($0, $1) })
        }
    }
    var replicas: [String: Replica] = [:]
    /// High-priority requests served here (the migration policies keep headroom for them).
    var highPriority = Set<String>()
    /// How each replica's engine preempts when KV blocks run out.
    public var preemption = ServingEngine.Preemption.recompute
    /// Finished results repeated until settled, in finishing order.
    private var done: [String: RequestResult] = [:]
    private var doneOrder: [String] = []
    /// Results per heartbeat, at most: a backlog goes out over several heartbeats.
    public var maxResultsPerReport = 4000
    /// KV blocks each replica's engine has, instead of what the GPU's memory leaves after the
    /// weights (nil): a small cache, for tests that need preemptions.
    public var kvBlocksOverride: Int?
    /// Bytes of KV blocks each replica allocates when it starts (its whole cache when that fits).
    public var preallocateBytes = 64 << 20

    /// Whether a preempted request (model, its blocks, its computed tokens) swaps its KV out to a
    /// memory host instead of being recomputed (nil: always recomputed). The swap target moves
    /// the bytes (`takeSwapWork`).
    public var remoteSwap: (@Sendable (InferenceModel, Int, Int) -> Bool)? {
        didSet { for id in replicas.keys { applyRemoteSwap(id) } }
    }
    func applyRemoteSwap(_ id: String) {
        guard let model = replicas[id]?.engine.model else { return }
        replicas[id]!.engine.remoteSwap = remoteSwap.map { f in { @Sendable b, t in f(model, b, t) } }
    }
    /// Memory tiers for offloaded weights (nil: a model larger than its GPUs is refused).
    public weak var weightSource: WeightSource?
    /// Requests served from the GPUs' own prefix caches: count, tokens skipped, their prompt tokens.
    public private(set) var gpuPrefix = (hits: 0, hitTokens: 0, promptTokens: 0)
    /// Memory tiers for KV prefixes (nil: every prompt is prefilled here).
    public weak var prefixCache: KVPrefixCache?
    /// Requests waiting for their cached prefix to load, by id: the replica and their arrival.
    var loading: [String: (replica: String, arrival: Double)] = [:]
    /// Requests with prefix keys in an engine here: told to the cache when their prompt is prefilled.
    var withPrefix: [String: (replica: String, request: InferenceRequest)] = [:]

    /// The node's tracer (`FeatureHandler.attach`); a recorder of its own, off, until then.
    public var tracer = Tracer()

    public init(kb: KnowledgeBase) { self.kb = kb }

    public var replicaIDs: [String] { replicas.keys.sorted() }
    public func busyGPUs() -> Set<UInt32> { replicas.values.reduce(into: Set<UInt32>()) { $0.formUnion($1.gpus) } }

    public func start(_ s: StartReplica, nodeGPUModel: String, nodeGPUs: UInt32, busy: Set<UInt32>, wallNanos: Int64) -> (ok: Bool, detail: String) {
        if replicas[s.replicaID] != nil { return (true, "replica \(s.replicaID) already serving") }
        guard s.timeScale > 0, s.batch >= 1, !s.gpus.isEmpty else { return (false, "start_replica needs time_scale > 0, batch ≥ 1 and GPUs") }
        guard s.gpuModel == nodeGPUModel, s.gpus.allSatisfy({ $0 < nodeGPUs }) else {
            return (false, "start_replica for \(s.gpus.count)x\(s.gpuModel) GPUs \(s.gpus) does not match this node's \(nodeGPUs)x\(nodeGPUModel)")
        }
        let taken = Set(s.gpus).intersection(busy.union(busyGPUs()))
        guard taken.isEmpty else { return (false, "GPUs \(taken.sorted()) are busy on this node") }
        guard var model = InferenceModel(kb: kb, model: s.model, gpuModel: s.gpuModel, tensorParallel: s.gpus.count) else {
            return (false, "no inference profile for \(s.model) on \(s.gpus.count)x\(s.gpuModel)")
        }
        if s.gpuMemoryUtilization > 0 {
            guard s.gpuMemoryUtilization <= 1 else { return (false, "gpu_memory_utilization \(s.gpuMemoryUtilization) must be within 0 … 1") }
            model.memoryUtilization = s.gpuMemoryUtilization
        }
        // A model larger than its GPUs: the layers that do not fit are streamed from a memory
        // host every step; no step starts until they are there.
        let plan = s.offloadWeights ? WeightOffloadPlan.plan(arch: model.arch, gpu: model.gpu, tensorParallel: s.gpus.count) : nil
        if let plan {
            guard weightSource != nil else { return (false, "\(s.model) does not fit \(s.gpus.count)x\(s.gpuModel) and this agent has no memory tiers to stream weights from") }
            model = model.offloadingWeights(plan, streamSeconds: 0)
        } else if model.gpuWeightBytes > model.usableGPUBytes {
            return (false, "\(s.model) does not fit \(s.gpus.count)x\(s.gpuModel) (\(Int(model.arch.weightBytes / 1e9)) GB of weights) and start_replica does not offload its weights")
        }
        var config = ServingEngine.Config(maxRunning: max(Int(s.batch), Int(s.maxNumSeqs)))
        config.preemption = preemption
        config.gpuBlocks = kvBlocksOverride
        let pool = s.kvBytesScale > 0 ? KVBlockPool(fullBlockBytes: model.arch.kvBytesPerToken * Double(config.blockTokens) / Double(model.tensorParallel),
                                                    kvBytesScale: s.kvBytesScale) : nil
        var engine = ServingEngine(model: model, config: config)
        engine.tracksPrefill = true
        if plan != nil { engine.stall(at: 0) }
        // The KV cache is allocated when the replica starts, as a serving engine does (up to
        // `preallocateBytes`; beyond, blocks are allocated as they are needed).
        if let pool { pool.preallocate(min(engine.gpuBlocks, preallocateBytes / pool.blockBytes)) }
        replicas[s.replicaID] = Replica(start: s, startedWall: wallNanos, engine: engine, gpus: Set(s.gpus), pool: pool)
        applyRemoteSwap(s.replicaID)
        if let plan { weightSource?.replicaStarted(s.replicaID, model: model, plan: plan, bytesScale: s.kvBytesScale) }
        tracer.instant("start replica \(s.replicaID)", category: "service", track: "replicas",
                              args: ["replica": s.replicaID, "service": s.serviceID, "gpus": s.gpus.map(String.init).joined(separator: ","),
                                     "batch": "\(s.batch)", "emulated": "true"])
        let offload = plan.map { String(format: "; %d of %d layers streamed from a memory tier (%.1f GB a step)", $0.offloadedLayers, $0.layers, $0.streamedBytesPerStep / 1e9) } ?? ""
        let kv = "\(replicas[s.replicaID]!.engine.gpuBlocks) KV blocks at gpu_memory_utilization \(model.memoryUtilization)"
        return (true, "serving \(s.serviceID) as \(s.replicaID) on GPUs \(s.gpus.map(String.init).joined(separator: ","))\(offload), \(kv) (emulated)")
    }

    /// Stops a replica; the requests it still held are dropped (the coordinator re-sends them).
    public func stop(_ id: String, wallNanos: Int64) -> (ok: Bool, detail: String) {
        guard var r = replicas.removeValue(forKey: id) else { return (true, "replica \(id) not serving") }
        if r.engine.model.weightOffload != nil { weightSource?.replicaStopped(id) }
        withPrefix = withPrefix.filter { $0.value.replica != id }
        // What finished before the stop is still reported; the rest is dropped.
        collect(&r, wallNanos: wallNanos)
        let dropped = r.engine.load
        tracer.instant("stop replica \(id)", category: "service", track: "replicas", args: ["replica": id, "dropped": "\(dropped)"])
        return (true, "stopped \(id); dropped \(dropped) unfinished requests")
    }

    public func serve(_ s: ServeRequests, wallNanos: Int64) -> (ok: Bool, detail: String) {
        guard let clock = replicas[s.replicaID]?.clock else { return (false, "replica \(s.replicaID) is not serving here") }
        let t = clock.trace(wall: wallNanos)
        var refused: [String] = []
        var again = 0
        // In place: a copy of the engine would copy its queues on every command.
        for q in s.requests {
            // Sent again (a coordinator restart, a re-sent command): served once, here or where it moved.
            if replicas[s.replicaID]!.engine.place(of: q.requestID) != nil || done[q.requestID] != nil
                || replicas[s.replicaID]!.movedAway.contains(q.requestID) || replicas[s.replicaID]!.held[q.requestID] != nil
                || loading[q.requestID] != nil { again += 1; continue }
            // Chunks still in this GPU's free blocks are used as they are (no load); the memory
            // tiers are asked for what follows them.
            var local = 0
            if !q.prefixKeys.isEmpty {
                withPrefix[q.requestID] = (s.replicaID, q)
                let chunk = Int(q.prefixChunkTokens)
                let usable = chunk > 0 ? min(q.prefixKeys.count, (Int(q.prefillTokens) - 1) / chunk) : 0
                if usable > 0 {
                    let free = replicas[s.replicaID]!.engine.freeBlocks * replicas[s.replicaID]!.engine.config.blockTokens
                    replicas[s.replicaID]!.local.trim(toTokens: free)
                    local = replicas[s.replicaID]!.local.longest(Array(q.prefixKeys.prefix(usable)))
                    if local > 0 { gpuPrefix.hits += 1; gpuPrefix.hitTokens += local * chunk }
                }
                if local < usable, let cache = prefixCache, cache.arrived(q, replica: s.replicaID, arrival: t, localChunks: local) {
                    loading[q.requestID] = (s.replicaID, t)
                    continue
                }
                // Not counted by the tiers' lookups: its prompt counts here.
                if local > 0 && (local == usable || prefixCache == nil) { gpuPrefix.promptTokens += Int(q.prefillTokens) }
            }
            if let why = replicas[s.replicaID]!.engine.add(id: q.requestID, prompt: Int(q.prefillTokens), decode: Int(q.decodeTokens), at: t,
                                                           cached: local * Int(q.prefixChunkTokens)) { refused.append(why); continue }
            if q.highPriority { highPriority.insert(q.requestID) }
        }
        replicas[s.replicaID]!.syncPool()
        let already = again > 0 ? "; \(again) already here or moved on" : ""
        if !refused.isEmpty { return (true, "admitted \(s.requests.count - refused.count - again)\(already); refused: " + refused.prefix(5).joined(separator: "; ")) }
        return (true, "admitted \(s.requests.count - again)\(already)")
    }

    /// Takes what the replica's engine finished by `wallNanos` into the results.
    func collect(_ r: inout Replica, wallNanos: Int64) {
        let clock = r.clock
        // A prompt's KV is complete once its first token is out: the prefix cache may store it.
        for id in r.engine.takePrefilled(by: clock.trace(wall: wallNanos)) {
            guard let p = withPrefix.removeValue(forKey: id) else { continue }
            let chunk = Int(p.request.prefixChunkTokens)
            if chunk > 0 { r.local.insert(Array(p.request.prefixKeys.prefix(Int(p.request.prefillTokens) / chunk)), chunkTokens: chunk) }
            prefixCache?.prefilled(p.request, replica: p.replica)
        }
        for f in r.engine.takeFinished(by: clock.trace(wall: wallNanos)) {
            var res = RequestResult()
            res.requestID = f.id
            res.replicaID = r.start.replicaID
            res.receivedAtUnixNanos = clock.wall(trace: f.arrived)
            res.finishedAtUnixNanos = clock.wall(trace: f.finished)
            res.queuedSeconds = f.admitted - f.arrived
            res.serviceSeconds = f.finished - f.admitted
            res.ttftSeconds = f.ttft
            res.meanTbtSeconds = f.meanTBT
            res.maxTbtSeconds = f.maxTBT
            res.preemptions = UInt32(f.preemptions)
            res.emulated = true
            if done[f.id] == nil { doneOrder.append(f.id) }
            done[f.id] = res
            highPriority.remove(f.id)
            withPrefix[f.id] = nil
        }
        r.syncPool()
    }

    /// Real bytes the replicas' KV block pools hold now, and at most so far.
    public var kvBytesHeld: (now: Int, peak: Int) {
        replicas.values.reduce((0, 0)) { ($0.0 + ($1.pool?.bytesHeld ?? 0), $0.1 + ($1.pool?.peakBytesHeld ?? 0)) }
    }

    /// Steps every engine to `wallNanos` and returns the unsettled results.
    public func results(wallNanos: Int64) -> [RequestResult] {
        for id in replicas.keys { collect(&replicas[id]!, wallNanos: wallNanos) }
        return doneOrder.prefix(maxResultsPerReport).compactMap { done[$0] }
    }

    /// Results go out at most every `reportBatchNanos` while requests are in an engine, as they
    /// finish: the coordinator counts a replica's outstanding requests until it hears of them, so
    /// waiting for the next 200 ms heartbeat would hold back routing (at 200×, 40 trace seconds).
    public var reportBatchNanos: Int64 = 20_000_000

    /// When results may next be due (not before `reportBatchNanos` from now), or nil when every
    /// engine is idle.
    public func nextReportDue(wallNanos: Int64) -> Int64? {
        var due: Int64?
        for r in replicas.values where !r.engine.isIdle || r.engine.nextFinishAt != nil {
            let next = r.engine.nextFinishAt.map { r.clock.wall(trace: $0) } ?? wallNanos
            due = min(due ?? next, next)
        }
        return due.map { max($0, wallNanos + reportBatchNanos) }
    }

    public func settle(_ ids: [String]) {
        for id in ids { done[id] = nil }
        doneOrder.removeAll { done[$0] == nil }
    }
}
