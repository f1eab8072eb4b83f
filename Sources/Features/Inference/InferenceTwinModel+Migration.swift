import Scheduling

/// What the migration feature's twin model does to the twin's replicas, as `MigrationHandler` does
/// to an agent's `EmulatedReplicas`: on virtual time (trace seconds), without bytes.
extension InferenceTwinModel {
    /// Whether a replica serves now (started, not stopped, its node not crashed).
    public func serving(_ replica: String) -> Bool {
        guard let r = replicas[replica] else { return false }
        return endedAt[r.life] == nil
    }

    public func node(of replica: String) -> String? { replicas[replica]?.node }

    /// Each serving replica's load for the migration policies, stepped to `t`; a step that
    /// finishes requests leaves them for `collect` (the engine keeps them until taken).
    public mutating func loads(at t: Double) -> [(replica: String, node: String, load: ServingEngine.Load, blockBytes: Double)] {
        replicaIDs.filter(serving).map { id in
            replicas[id]!.engine.advance(to: t)
            let e = replicas[id]!.engine
            let full = e.model.arch.kvBytesPerToken * Double(e.config.blockTokens) / Double(e.model.tensorParallel)
            return (id, replicas[id]!.node, e.loadSnapshot, full)
        }
    }

    public mutating func place(of request: String, in replica: String, at t: Double) -> ServingEngine.Place? {
        guard serving(replica) else { return nil }
        replicas[replica]!.engine.advance(to: t)
        return replicas[replica]!.engine.place(of: request)
    }

    public func peek(_ request: String, in replica: String) -> ServingEngine.SequenceState? { replicas[replica]?.engine.peek(request) }
    public func completeBlocks(of request: String, in replica: String) -> Int? { replicas[replica]?.engine.completeBlocks(of: request) }

    public mutating func takeOut(_ request: String, from replica: String, at t: Double) -> ServingEngine.SequenceState? {
        guard serving(replica) else { return nil }
        replicas[replica]!.engine.advance(to: t)
        return replicas[replica]!.engine.takeOut(request)
    }

    public mutating func reserve(_ blocks: Int, in replica: String) -> Bool {
        guard serving(replica) else { return false }
        return replicas[replica]!.engine.reserve(blocks)
    }

    public mutating func release(_ blocks: Int, in replica: String) {
        guard serving(replica) else { return }
        replicas[replica]!.engine.release(blocks)
    }

    public mutating func resume(_ st: ServingEngine.SequenceState, reserved: Int, kvBlocks: Int, in replica: String, at t: Double) {
        guard serving(replica) else { return }
        replicas[replica]!.engine.resume(st, reserved: reserved, kvBlocks: kvBlocks, at: t)
    }

    /// Seconds one way to stage `blocks` KV blocks of the replica's model on a memory host; nil
    /// without memory hosts (no staging).
    public func stageSeconds(blocks: Int, in replica: String) -> Double? {
        guard let tiers, let e = replicas[replica]?.engine else { return nil }
        return tiers.stageSeconds(model: e.model, blocks: blocks, blockTokens: e.config.blockTokens)
    }

    /// Takes on at `t` a request whose KV a migration staged on a memory host (`seconds` each way):
    /// it queues as swapped out there, as on the agent (`EmulatedReplicas.adoptStaged`).
    public mutating func adoptStaged(_ st: ServingEngine.SequenceState, seconds: Double, in replica: String, at t: Double) {
        guard serving(replica) else { return }
        swappedOut[st.id] = (t - seconds, seconds)
        replicas[replica]!.engine.adoptStaged(st, at: t)
        tiers?.countSwap("staged_ins")
    }

    public mutating func takeResumeGap(_ request: String, in replica: String, at t: Double) -> Double? {
        guard replicas[replica] != nil else { return nil }
        replicas[replica]!.engine.advance(to: t)
        return replicas[replica]!.engine.takeResumeGap(request)
    }

    public var blockTokens: Int { ServingEngine.Config(maxRunning: 1).blockTokens }
}
