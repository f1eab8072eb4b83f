import Scheduling

/// Feature "inference" in the digital twin: the replicas GPU agents serve, on virtual time (trace
/// seconds). Each replica is the `ServingEngine` the agent's `EmulatedReplicas` steps (continuous
/// batching over paged KV blocks, from Vidur's profiles); the twin routes with the coordinator's
/// `RequestRouter`, so only the agents are modelled. A replica's life ends when it is stopped or its
/// node crashes: results finished by then still count (the agent reports them), later ones are
/// lost, and requests sent to a crashed node's replica vanish until the failure detector tells the
/// router.
public struct InferenceTwinModel {
    /// A request's emulated result, due at `completion.finished`.
    public struct Finish {
        public var completion: RequestRouter.Completion
        public var node: String
        let life: Int
    }
    struct Replica { var engine: ServingEngine; var node: String; var life: Int; var local = GPUPrefixCache() }

    var replicas: [String: Replica] = [:]
    /// When each replica life ended (stopped or crashed), by life number.
    var endedAt: [Int: Double] = [:]
    private var lives = 0
    public var preemption = ServingEngine.Preemption.recompute
    /// The memory hosts' tiers (nil: no memory tier): prefixes, streamed weights, KV swap.
    public var tiers: TiersTwinModel?
    /// Requests with prefix keys in an engine, told to the tiers once prefilled.
    var withPrefix: [String: ServiceRequest] = [:]
    /// When each request swapped out to a memory host left, and its one-way seconds.
    var swappedOut: [String: (at: Double, seconds: Double)] = [:]

    public init() {}

    public var replicaIDs: [String] { replicas.keys.sorted() }

    public mutating func start(_ id: String, node: String, model: InferenceModel, batch: Int) {
        guard replicas[id] == nil else { return }
        lives += 1
        var config = ServingEngine.Config(maxRunning: batch)
        config.preemption = preemption
        var engine = ServingEngine(model: model, config: config)
        engine.tracksPrefill = true
        if let tiers {
            engine.remoteSwap = tiers.swapDecision(blockTokens: config.blockTokens).map { f in { @Sendable b, t in f(model, b, t) } }
            // Offloaded weights stream at the tier's figures; with no host the replica stalls.
            if let plan = model.weightOffload {
                if let s = tiers.weightStreamSeconds(plan) { engine.unstall(at: 0, streamSeconds: s) } else { engine.stall(at: 0) }
            }
        }
        replicas[id] = Replica(engine: engine, node: node, life: lives)
    }

    public mutating func stop(_ id: String, at now: Double) {
        guard let r = replicas.removeValue(forKey: id) else { return }
        endedAt[r.life] = now
    }

    /// The node crashed: its replicas answer nothing from now on (the router still sends to them
    /// until it learns of the failure).
    public mutating func nodeCrashed(_ node: String, at now: Double) {
        for r in replicas.values where r.node == node && endedAt[r.life] == nil { endedAt[r.life] = now }
    }

    /// Requests reach `replica` at `t`. Nothing happens for a replica that is gone or whose node
    /// crashed; a request the engine refuses (it can never fit) is dropped.
    public mutating func serve(_ replica: String, _ requests: [ServiceRequest], at t: Double) {
        guard let r = replicas[replica], endedAt[r.life] == nil else { return }
        // In place: a copy of the engine would copy its queues on every call.
        for q in requests {
            // The replica's own GPU prefix cache first (as `EmulatedReplicas`).
            let chunk = q.prefixChunkTokens
            let usable = chunk > 0 ? min(q.prefixKeys.count, (q.prefill - 1) / chunk) : 0
            var n = 0
            if usable > 0 {
                withPrefix[q.id] = q
                let e = replicas[replica]!.engine
                replicas[replica]!.local.trim(toTokens: e.freeBlocks * e.config.blockTokens)
                n = replicas[replica]!.local.longest(Array(q.prefixKeys.prefix(usable)))
                if n > 0 { tiers?.countSwap("gpu_hits"); tiers?.countSwap("gpu_hit_tokens", n * chunk) }
                if n == usable || (n > 0 && tiers == nil) {
                    tiers?.countSwap("gpu_prompt_tokens", q.prefill)
                    _ = replicas[replica]!.engine.add(id: q.id, prompt: q.prefill, decode: q.decode, at: t, cached: n * chunk)
                    continue
                }
            }
            if let tiers, !q.prefixKeys.isEmpty {
                let e = replicas[replica]!.engine
                let (cached, ready) = tiers.arrived(q, model: e.model, backlog: e.backlog, maxBatchedTokens: e.config.maxBatchedTokens, at: t, localChunks: n)
                withPrefix[q.id] = q
                _ = replicas[replica]!.engine.add(id: q.id, prompt: q.prefill, decode: q.decode, at: ready, cached: cached, arrivedAt: t)
                continue
            }
            _ = replicas[replica]!.engine.add(id: q.id, prompt: q.prefill, decode: q.decode, at: t)
        }
    }

    /// Steps the replica's engine to `t`; returns the results finished by then and when to look
    /// again (its next result or step), nil when it is idle.
    public mutating func collect(_ replica: String, at t: Double) -> (finished: [Finish], next: Double?) {
        guard let life = replicas[replica]?.life, let node = replicas[replica]?.node, endedAt[life] == nil else { return ([], nil) }
        var finished: [ServingEngine.Finished] = []
        // Swaps to a memory host resolve on virtual time: out, then back after the round trip.
        for _ in 0..<10_000 {
            finished += replicas[replica]!.engine.takeFinished(by: t)
            guard let tiers else { break }
            let e = replicas[replica]!.engine
            for o in replicas[replica]!.engine.takeSwapOuts() {
                swappedOut[o.id] = (o.at, tiers.swapSeconds(model: e.model, blocks: o.blocks, blockTokens: e.config.blockTokens) ?? 0)
                tiers.countSwap("swap_outs")
            }
            let ins = replicas[replica]!.engine.takeSwapIns()
            if ins.isEmpty { break }
            for i in ins {
                let out = swappedOut.removeValue(forKey: i.id) ?? (i.at, 0)
                replicas[replica]!.engine.swapInDone(i.id, readyAt: max(i.at, out.at + out.seconds) + out.seconds)
                tiers.countSwap("swap_ins")
            }
        }
        if replicas[replica]!.engine.tracksPrefill {
            for id in replicas[replica]!.engine.takePrefilled(by: t) {
                guard let q = withPrefix.removeValue(forKey: id) else { continue }
                if q.prefixChunkTokens > 0 { replicas[replica]!.local.insert(Array(q.prefixKeys.prefix(q.prefill / q.prefixChunkTokens)), chunkTokens: q.prefixChunkTokens) }
                tiers?.prefilled(q, model: replicas[replica]!.engine.model, maxBatchedTokens: replicas[replica]!.engine.config.maxBatchedTokens)
            }
        }
        let out = finished.map { f in
            var c = RequestRouter.Completion(requestID: f.id, replicaID: replica, finished: f.finished, queued: f.admitted - f.arrived, service: f.finished - f.admitted)
            c.ttft = f.ttft; c.meanTBT = f.meanTBT; c.maxTBT = f.maxTBT; c.preemptions = f.preemptions
            return Finish(completion: c, node: node, life: life)
        }
        return (out, nextLook(replica))
    }

    /// When to look at the replica next, nil when idle.
    public func nextLook(_ replica: String) -> Double? {
        guard let r = replicas[replica], endedAt[r.life] == nil else { return nil }
        return r.engine.nextFinishAt ?? r.engine.nextStepAt
    }

    /// Whether the agent delivers this result: its replica was still serving when it finished.
    public func delivers(_ f: Finish) -> Bool {
        guard let end = endedAt[f.life] else { return true }
        return f.completion.finished <= end
    }
}
