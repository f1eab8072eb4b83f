import Foundation
import Protocol
import Scheduling

/// KV prefixes kept outside the GPU (feature "tiers", on memory hosts): a request whose prompt
/// starts with cached chunks may load them instead of prefilling them, and a finished request's
/// chunks may be stored for the next. The replicas call it; it answers on the session's thread.
public protocol KVPrefixCache: AnyObject {
    /// A request with prefix keys reached `replica` at trace time `arrival`, its first
    /// `localChunks` chunks in the GPU's own prefix cache. True: the cache takes it and will call
    /// `EmulatedReplicas.admitLoaded` once what follows them is loaded (or not).
    func arrived(_ q: InferenceRequest, replica: String, arrival: Double, localChunks: Int) -> Bool
    /// A request with prefix keys has its whole prompt's KV on `replica` (its prefill is done).
    func prefilled(_ q: InferenceRequest, replica: String)
}

extension EmulatedReplicas {
    /// Admits a request the prefix cache held: `cached` prompt tokens have their KV loaded, and the
    /// request may run from trace time `readyAt`; its time to first token counts from `arrival`.
    @discardableResult
    public func admitLoaded(_ q: InferenceRequest, replica: String, cached: Int, readyAt: Double, arrival: Double) -> String? {
        guard loading.removeValue(forKey: q.requestID) != nil else { return "request \(q.requestID) was not waiting for its prefix" }
        guard replicas[replica] != nil else { return "replica \(replica) stopped while \(q.requestID) loaded its prefix" }
        if let why = replicas[replica]!.engine.add(id: q.requestID, prompt: Int(q.prefillTokens), decode: Int(q.decodeTokens), at: readyAt,
                                                   cached: cached, arrivedAt: arrival) { return why }
        if q.highPriority { highPriority.insert(q.requestID) }
        replicas[replica]!.syncPool()
        return nil
    }

    /// Seconds the replica's GPU takes to prefill `tokens` of a prompt (chunk by chunk, at the
    /// engine's token budget): what loading a cached prefix saves.
    public func prefillSeconds(_ tokens: Int, replica: String) -> Double? {
        guard let e = replicas[replica]?.engine else { return nil }
        return e.model.prefillSeconds(tokens: tokens, budget: e.config.maxBatchedTokens)
    }

    /// Real KV bytes per token of the replica's model (per GPU of its tensor-parallel group), and
    /// the bytes it holds per token at `kv_bytes_scale`.
    public func kvBytesPerToken(replica: String) -> (real: Double, held: Double, scale: Double)? {
        guard let b = blockBytes(of: replica) else { return nil }
        let tokens = Double(blockTokens)
        return (b.full / tokens, b.scale > 0 ? b.full * b.scale / tokens : 0, b.scale)
    }

    public var loadingCount: Int { loading.count }

    /// Requests waiting for the replica's GPU now (the engine's queue, and prefixes loading).
    public func backlog(replica: String) -> Int? {
        guard let e = replicas[replica]?.engine else { return nil }
        return e.backlog + loading.values.filter { $0.replica == replica }.count
    }
}
