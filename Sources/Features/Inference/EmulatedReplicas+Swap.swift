import Foundation
import Protocol
import Scheduling

/// A preempted request's KV on its way to a memory host: its blocks' real bytes, read from the
/// replica's pool before it let them go.
public struct SwapOut {
    public var replica: String
    public var id: String
    public var tokens: Int
    public var blocks: [[UInt8]]
    /// The engine step it was preempted in (trace seconds).
    public var at: Double
}

/// A swapped request with room again: its KV is to be fetched back; its blocks are reserved.
public struct SwapIn: Equatable {
    public var replica: String
    public var id: String
    public var blocks: Int
    public var tokens: Int
    public var at: Double
}

extension EmulatedReplicas {
    /// KV to send to memory hosts and to fetch back, from every replica since the last call.
    public func takeSwapWork(wallNanos: Int64) -> (outs: [SwapOut], ins: [SwapIn]) {
        var outs: [SwapOut] = [], ins: [SwapIn] = []
        for id in replicas.keys.sorted() {
            if let clock = replicas[id]?.clock { replicas[id]!.engine.advance(to: clock.trace(wall: wallNanos)) }
            replicas[id]!.syncPool()
            outs += replicas[id]!.swapOuts; ins += replicas[id]!.swapIns
            replicas[id]!.swapOuts.removeAll(); replicas[id]!.swapIns.removeAll()
        }
        return (outs, ins)
    }

    /// The swapped KV of request `id` came back: each block's bytes are checked against what the
    /// request's KV must be and written into the replica's pool; it runs from `readyAt` (trace).
    /// Nil, or why it could not be used (the request is then recomputed).
    @discardableResult
    public func swapInArrived(replica: String, id: String, blocks: [ArraySlice<UInt8>], readyAt: Double) -> String? {
        guard replicas[replica] != nil else { return "replica \(replica) stopped" }
        if let pool = replicas[replica]!.pool {
            pool.drop(id)
            do {
                for (b, bytes) in blocks.enumerated() {
                    guard bytes.count == pool.blockBytes else { throw KVBlockPool.PoolError("block \(b) of \(id) came back with \(bytes.count) bytes, not \(pool.blockBytes)") }
                    try bytes.withUnsafeBytes { try pool.write(id, block: b, offset: 0, bytes: $0) }
                }
            } catch {
                pool.drop(id)
                replicas[replica]!.engine.swapInFailed(id)
                replicas[replica]!.syncPool()
                return "\(error)"
            }
        }
        replicas[replica]!.engine.swapInDone(id, readyAt: readyAt)
        replicas[replica]!.syncPool()
        return nil
    }

    /// The swapped KV of request `id` is lost: it is recomputed.
    public func swapInFailed(replica: String, id: String) {
        guard replicas[replica] != nil else { return }
        replicas[replica]!.engine.swapInFailed(id)
        replicas[replica]!.syncPool()
    }

    /// Preemptions in all replicas' engines so far, and those that swapped to a memory host.
    public var preemptionCounts: (all: Int, remote: Int) {
        replicas.values.reduce((0, 0)) { ($0.0 + $1.engine.preemptions, $0.1 + $1.engine.remoteSwaps) }
    }

    /// Seconds `tokens` of prompt take to prefill on the replica (what a swap saves).
    public func recomputeSeconds(_ tokens: Int, replica: String) -> Double? { prefillSeconds(tokens, replica: replica) }
}
