import Foundation
import Scheduling

/// What the migration feature does to a replica: take a request out of its engine (keeping its KV
/// bytes until the destination has them), set blocks aside for one about to arrive, write arriving
/// blocks (every byte checked), and resume a moved request. Times in and out are the agent's wall
/// clock (Unix nanoseconds); each replica's engine runs on its own trace clock.
///
/// Called on the agent session's thread, like the rest of `EmulatedReplicas`.
extension EmulatedReplicas {
    public func serves(_ replica: String) -> Bool { replicas[replica] != nil }

    /// The replica's trace clock (its engine's time base).
    public func clock(of replica: String) -> TraceClock? { replicas[replica]?.clock }

    /// Steps the replica's engine to `wallNanos`; what finished is taken into the reports.
    public func step(_ replica: String, wallNanos: Int64) {
        guard replicas[replica] != nil else { return }
        collect(&replicas[replica]!, wallNanos: wallNanos)
    }

    public func place(of request: String, in replica: String) -> ServingEngine.Place? {
        replicas[replica]?.engine.place(of: request)
    }

    /// A request's state wherever it is in the engine, without taking it out.
    public func peek(_ request: String, in replica: String) -> ServingEngine.SequenceState? {
        replicas[replica]?.engine.peek(request)
    }

    /// Full blocks of computed KV a running request has (what a copy stage may send).
    public func completeBlocks(of request: String, in replica: String) -> Int? {
        replicas[replica]?.engine.completeBlocks(of: request)
    }

    /// Tokens of a request wherever it is in the engine: (prompt, decode, generated).
    public func tokens(of request: String, in replica: String) -> (prompt: Int, decode: Int, generated: Int)? {
        guard let st = replicas[replica]?.engine.peek(request) else { return nil }
        return (st.prompt, st.decode, st.generated)
    }

    public var blockTokens: Int { ServingEngine.Config(maxRunning: 1).blockTokens }
    public func isHighPriority(_ request: String) -> Bool { highPriority.contains(request) }

    /// Bytes of one KV block as the replica's pool holds it (after `kv_bytes_scale`; 0 without a
    /// pool), its real size, and the scale.
    public func blockBytes(of replica: String) -> (held: Int, full: Double, scale: Double)? {
        guard let r = replicas[replica] else { return nil }
        let full = r.engine.model.arch.kvBytesPerToken * Double(r.engine.config.blockTokens) / Double(r.engine.model.tensorParallel)
        return (r.pool?.blockBytes ?? 0, full, r.start.kvBytesScale)
    }

    /// Keeps the first `blocks` KV blocks of a request in the pool whatever the engine does (a
    /// copy stage reads them); nil stops holding.
    public func hold(_ request: String, blocks: Int?, in replica: String) {
        guard replicas[replica] != nil else { return }
        replicas[replica]!.held[request] = blocks
        replicas[replica]!.syncPool()
    }

    /// Takes a request out of the engine after the step in flight (a migration's suspension, or a
    /// waiting one with no KV); its KV bytes stay in the pool until `free` or `resumeHere`.
    public func takeOut(_ request: String, from replica: String, wallNanos: Int64) -> ServingEngine.SequenceState? {
        guard replicas[replica] != nil else { return nil }
        collect(&replicas[replica]!, wallNanos: wallNanos)
        guard let st = replicas[replica]!.engine.takeOut(request) else { return nil }
        replicas[replica]!.held[request] = (st.computed + blockTokens - 1) / blockTokens
        replicas[replica]!.syncPool()
        return st
    }

    /// The request lives on elsewhere now: its bytes go, and a copy sent here again is not served.
    public func free(_ request: String, from replica: String) {
        guard replicas[replica] != nil else { return }
        replicas[replica]!.held[request] = nil
        replicas[replica]!.movedAway.insert(request)
        highPriority.remove(request)
        replicas[replica]!.syncPool()
    }

    /// Sets `blocks` aside for a request about to arrive; the reason when there is no room.
    public func reserve(_ blocks: Int, for request: String, in replica: String) -> String? {
        guard let r = replicas[replica] else { return "replica \(replica) is not serving on this node" }
        guard request.isEmpty || r.engine.place(of: request) == nil else { return "request \(request) is already on replica \(replica)" }
        guard replicas[replica]!.engine.reserve(blocks) else {
            return "replica \(replica) has \(r.engine.freeBlocks) free KV blocks; request \(request) needs \(blocks)"
        }
        return nil
    }

    /// Gives back a reservation and drops what arrived of the request.
    public func release(_ blocks: Int, for request: String, in replica: String) {
        guard replicas[replica] != nil else { return }
        replicas[replica]!.engine.release(blocks)
        replicas[replica]!.held[request] = nil
        replicas[replica]!.syncPool()
    }

    /// Stores arriving bytes of block `block` of a request after checking every one against the
    /// block's contents; the error names the first wrong byte.
    public func write(_ request: String, block: Int, offset: Int, bytes: UnsafeRawBufferPointer, in replica: String) throws {
        guard let pool = replicas[replica]?.pool else { return }
        try pool.write(request, block: block, offset: offset, bytes: bytes)
        replicas[replica]!.held[request] = pool.counts[request] ?? 0
    }

    /// Reads `length` bytes at `offset` of blocks `range` of a request (a data-plane chunk).
    public func read(_ request: String, blocks range: Range<Int>, offset: Int, length: Int, in replica: String,
                     into emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard let pool = replicas[replica]?.pool else {
            throw KVBlockPool.PoolError("replica \(replica) is not serving on this node")
        }
        try pool.read(request, blocks: range, offset: offset, length: length, into: emit)
    }

    /// Resumes a moved request at `wallNanos` with `reserved` blocks set aside for it and the KV
    /// of its first `kvBlocks` blocks present; the rest is prefilled again.
    public func resume(_ st: ServingEngine.SequenceState, highPriority high: Bool, reserved: Int, kvBlocks: Int, in replica: String, wallNanos: Int64) {
        guard replicas[replica] != nil else { return }
        let t = replicas[replica]!.clock.trace(wall: wallNanos)
        replicas[replica]!.engine.resume(st, reserved: reserved, kvBlocks: kvBlocks, at: t)
        replicas[replica]!.held[st.id] = nil
        replicas[replica]!.movedAway.remove(st.id)
        if high { highPriority.insert(st.id) }
        replicas[replica]!.syncPool()
        tracer.instant("resume \(st.id)", category: "migration", track: "replicas", args: ["replica": replica, "kv_blocks": "\(kvBlocks)"])
    }

    /// Takes on at `wallNanos` a request moved here whose KV a migration staged on a memory host
    /// (this replica had no room): it queues as swapped out to that host, and its KV is fetched
    /// (`takeSwapWork`) as soon as its blocks fit, ahead of new arrivals.
    public func adoptStaged(_ st: ServingEngine.SequenceState, highPriority high: Bool, in replica: String, wallNanos: Int64) {
        guard replicas[replica] != nil else { return }
        let t = replicas[replica]!.clock.trace(wall: wallNanos)
        replicas[replica]!.engine.adoptStaged(st, at: t)
        replicas[replica]!.held[st.id] = nil
        replicas[replica]!.movedAway.remove(st.id)
        if high { highPriority.insert(st.id) }
        replicas[replica]!.syncPool()
        tracer.instant("adopt staged \(st.id)", category: "migration", track: "replicas", args: ["replica": replica, "kv_tokens": "\(st.computed)"])
    }

    /// The first `count` KV blocks of a request as real bytes (a taken-out request's, held for its
    /// migration); without a pool, each block's contents as the request's KV must be.
    public func blockBytes(_ request: String, count: Int, in replica: String) throws -> [[UInt8]] {
        guard let r = replicas[replica] else { throw KVBlockPool.PoolError("replica \(replica) is not serving on this node") }
        guard let pool = r.pool else { return (0..<count).map { KVBlockPool.contents(request: request, block: $0, bytes: 8) } }
        return try (0..<count).map { b in
            var out: [UInt8] = []
            try pool.read(request, blocks: b..<(b + 1), offset: 0, length: pool.blockBytes, into: { out.append(contentsOf: $0) })
            return out
        }
    }

    /// The gap between a moved request's last token before the move and its first one here, once out.
    public func takeResumeGap(_ request: String, in replica: String, wallNanos: Int64) -> Double? {
        guard replicas[replica] != nil else { return nil }
        collect(&replicas[replica]!, wallNanos: wallNanos)
        return replicas[replica]!.engine.takeResumeGap(request)
    }

    /// Each replica's load for the migration policies, stepped to `wallNanos`.
    public func loads(wallNanos: Int64) -> [(replica: String, load: ServingEngine.Load, blockBytes: Double)] {
        replicaIDs.map { id in
            collect(&replicas[id]!, wallNanos: wallNanos)
            return (id, replicas[id]!.engine.loadSnapshot, blockBytes(of: id)?.full ?? 0)
        }
    }
}
