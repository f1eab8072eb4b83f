import Cluster
import DataPlane
import Foundation
import Protocol
import Scheduling

/// KV swap to a memory host (vLLM swaps only to its own CPU memory): when a replica's engine runs
/// out of KV blocks and preempts a request, the offload policy decides whether its KV goes to a
/// memory host (real bytes read from the replica's pool) rather than being recomputed; when room
/// comes back the engine reserves its blocks and the KV is taken back from the host (every byte
/// checked as it is written into the pool), and the request goes on from where it stopped after
/// the modelled round trip (its bytes over the tier and the link, each way). A host that is gone,
/// a put or get that fails, bytes that come back wrong: the request is recomputed, and counted.
extension KVTierCache {
    struct SwapRecord {
        var host: MemoryHostAddress
        var keys: [String]
        var tier: String
        /// Trace seconds of the swap-out, its modelled seconds each way, and its real bytes.
        var outAt: Double
        var seconds: Double
        var realBytes: Double
        var putDone = false
        var lost = false
        /// A swap-in asked for while the put was still on its way.
        var awaiting: SwapIn?
    }

    /// Installs the swap decision in the replicas' engines from the policy, the hosts and the link
    /// (none: preempted requests are recomputed).
    func configureSwap() {
        guard policy.name != "none", let host = config.hosts.sorted(by: { $0.node < $1.node }).first else { replicas.remoteSwap = nil; return }
        let figures = host.tierFigures
        guard let tierName = policy.swapTier(figures).tier, let tier = figures.first(where: { $0.kind == tierName }) else { replicas.remoteSwap = nil; return }
        let policy = self.policy, link = config.linkBytesPerSecond, linkLatency = config.linkLatencySeconds
        let blockTokens = replicas.blockTokens
        replicas.remoteSwap = { @Sendable model, blocks, tokens in
            let bytes = Double(blocks * blockTokens) * model.arch.kvBytesPerToken / Double(model.tensorParallel)
            let c = PrefixChoice(tokens: tokens, bytes: bytes, tier: tier, linkBytesPerSecond: link, linkLatencySeconds: linkLatency,
                                 recomputeSeconds: model.prefillSeconds(tokens: tokens, budget: 2048))
            return policy.swaps(c).swap
        }
    }

    /// Sends preempted requests' KV out and fetches swapped-in requests' KV back.
    func pumpSwaps(wallNanos: Int64) {
        guard replicas.remoteSwap != nil || !swaps.isEmpty else { return }
        let (outs, ins) = replicas.takeSwapWork(wallNanos: wallNanos)
        for o in outs { swapOut(o) }
        for i in ins { swapIn(i) }
    }

    private func swapOut(_ o: SwapOut) {
        guard let host = host(for: [o.id]), let per = replicas.kvBytesPerToken(replica: o.replica) else {
            swaps[o.id] = nil
            return
        }
        let figures = host.tierFigures
        let tier = policy.swapTier(figures).tier ?? figures.first?.kind ?? "dram"
        let fig = figures.first { $0.kind == tier } ?? TierFigures(kind: tier, bandwidthBytesPerSecond: 0, latencySeconds: 0)
        let real = Double(o.blocks.count * replicas.blockTokens) * per.real
        let seconds = PrefixChoice(tokens: o.tokens, bytes: real, tier: fig, linkBytesPerSecond: config.linkBytesPerSecond,
                                   linkLatencySeconds: config.linkLatencySeconds, recomputeSeconds: 0).loadSeconds
        swapSerial += 1
        let keys = (0..<o.blocks.count).map { "swap/\(o.replica)/\(o.id)/\(swapSerial)/\($0)" }
        swaps[o.id] = SwapRecord(host: host, keys: keys, tier: tier, outAt: o.at, seconds: seconds, realBytes: real)
        let id = o.id
        do {
            try client.put(Array(zip(keys, o.blocks)).map { (key: $0.0, bytes: $0.1) }, to: host.peer,
                           tier: TierKind(rawValue: tier)) { [weak self] r in
                guard let self, var rec = self.swaps[id], rec.keys == keys else { return }
                switch r {
                case .success(let n):
                    self.stats.swapOuts += 1
                    self.stats.swapBytesOut += UInt64(n)
                    rec.putDone = true
                case .failure(let e):
                    rec.lost = true
                    self.logger.warning("tiers: swapping out \(id) to \(host.node) failed, it will be recomputed: \(e)")
                }
                let waiting = rec.awaiting
                rec.awaiting = nil
                self.swaps[id] = rec
                if let w = waiting { self.swapIn(w) }
            }
        } catch {
            swaps[id]!.lost = true
        }
    }

    private func swapIn(_ i: SwapIn) {
        guard var rec = swaps[i.id], !rec.lost else {
            swaps[i.id] = nil
            stats.swapFallbacks += 1
            replicas.swapInFailed(replica: i.replica, id: i.id)
            return
        }
        guard rec.putDone else { rec.awaiting = i; swaps[i.id] = rec; return }
        swaps[i.id] = nil
        let keys = rec.keys
        do {
            try client.get(keys, from: rec.host.peer,
                           promote: false, take: true) { [weak self] r in
                guard let self else { return }
                guard case .success(let f) = r, f.header.blocks.map(\.key) == keys else {
                    let why: String
                    if case .failure(let e) = r { why = "\(e)" } else { why = "blocks missing on the host" }
                    self.logger.warning("tiers: swapping \(i.id) back in failed, recomputing it: \(why)")
                    self.stats.swapFallbacks += 1
                    self.replicas.swapInFailed(replica: i.replica, id: i.id)
                    return
                }
                // It runs once its KV has gone out and come back (modelled), and not before the
                // real bytes are here.
                let now = self.traceNow(i.replica) ?? i.at
                let ready = max(now, max(i.at, rec.outAt + rec.seconds) + rec.seconds)
                if let why = self.replicas.swapInArrived(replica: i.replica, id: i.id, blocks: (0..<f.header.blocks.count).map { f.bytes($0) }, readyAt: ready) {
                    self.logger.warning("tiers: swapped KV of \(i.id) unusable, recomputing it: \(why)")
                    self.stats.swapFallbacks += 1
                    return
                }
                self.stats.swapIns += 1
                self.stats.swapBytesIn += UInt64(f.data.count)
                self.stats.swapSeconds += 2 * rec.seconds
            }
        } catch {
            stats.swapFallbacks += 1
            replicas.swapInFailed(replica: i.replica, id: i.id)
        }
    }
}
