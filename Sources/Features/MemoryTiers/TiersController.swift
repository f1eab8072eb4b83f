import Cluster
import Coordinator
import Foundation
import Protocol

/// Feature "tiers", coordinator side: the memory hosts' block stores as they last reported them
/// (capacity, use, hits, evictions per tier), for `strato tiers`, the experiment runner and the
/// trace. Telemetry, not state: it lives in memory and comes back with the next reports after a
/// restart. A host that dies is shown dead: its DRAM and CXL contents are gone with it (its NVMe
/// contents come back when it registers again).
public final class TiersController: CoordinatorFeature {
    public let features = [TierStoreHandler.feature]
    private var latest: [String: (stats: TierStats, at: Int64)] = [:]
    private var gpuStats: [String: KVCacheStats] = [:]
    /// Offload policy and the emulated network between GPU agents and memory hosts, sent to every
    /// GPU agent with the memory hosts alive now.
    public let policy: String
    public let linkBytesPerSecond: Double
    public let linkLatencySeconds: Double
    private var version: UInt64 = 0
    /// The hosts last sent, and the GPU nodes that have them.
    private var sentHosts: [MemoryHostAddress] = []
    private var configured = Set<String>()

    /// The coordinator's request router, for cache-aware routing (nil: not routed by prefix).
    private let scheduling: SchedulingController?

    public init(policy: String = "tiered", linkBytesPerSecond: Double = 12.5e9, linkLatencySeconds: Double = 10e-6, scheduling: SchedulingController? = nil) {
        self.policy = policy
        self.scheduling = scheduling
        self.linkBytesPerSecond = linkBytesPerSecond
        self.linkLatencySeconds = linkLatencySeconds
    }

    public func start(_ s: CoordinatorServices, restoredNodes: [NodeRecord]) throws {
        // Versions grow across restarts, so an agent takes the new coordinator's config.
        version = UInt64(max(0, s.clock.wallNanos() / 1_000_000))
        // Our policy routes by prefix too; the single-tier baselines and none do not.
        scheduling?.jobs.requests.prefixAffinity = policy == "tiered"
    }

    /// Memory hosts alive with a data plane, as GPU agents reach them.
    private func hosts(_ s: CoordinatorServices) -> [MemoryHostAddress] {
        s.membership.nodes.values.filter { $0.info.kind == .memory && $0.info.state == .alive && !$0.info.dataEndpoint.isEmpty }
            .sorted { $0.info.nodeID < $1.info.nodeID }
            .map { n in
                var h = MemoryHostAddress()
                h.node = n.info.nodeID; h.endpoint = n.info.dataEndpoint; h.publicKey = n.info.dataPublicKey
                h.tiers = n.info.capabilities.memory.tiers.sorted { $0.kind.rawValue < $1.kind.rawValue }.map { t in
                    var f = TierFigure()
                    f.kind = t.kind == .dram ? "dram" : t.kind == .cxl ? "cxl" : "nvme"
                    f.bandwidthGbps = t.bandwidthGbps; f.latencyNs = t.latencyNs; f.emulated = t.emulated
                    return f
                }
                return h
            }
    }

    /// Sends the config to GPU agents that lack the current one (all of them when the hosts changed).
    public func turn(_ s: CoordinatorServices) -> Bool {
        let now = hosts(s)
        if now != sentHosts { sentHosts = now; configured.removeAll(); version += 1 }
        var sent = false
        for n in s.membership.nodes.values where n.info.kind == .gpu && n.info.state == .alive && !n.info.dataEndpoint.isEmpty
            && !configured.contains(n.info.nodeID) {
            var c = TierConfig()
            c.policy = policy; c.hosts = now; c.linkBytesPerSecond = linkBytesPerSecond; c.linkLatencySeconds = linkLatencySeconds; c.version = version
            var cmd = TierCommand(); cmd.config = c
            do {
                try s.enqueueTransient(.feature(TierStoreHandler.feature, node: n.info.nodeID, cmd))
                configured.insert(n.info.nodeID)
                sent = true
            } catch { s.logLimited("tiers_config", "could not send the tier config to \(n.info.nodeID): \(error)") }
        }
        return sent
    }

    public func nodeRegistered(_ r: Register, newLife: Bool, _ s: CoordinatorServices) {
        // A GPU agent that starts again has lost its config.
        if newLife { configured.remove(r.nodeID) }
    }

    public func reports(_ reports: [FeatureReport], feature: String, from nodeID: String, clockOffsetNanos: Int64, _ s: CoordinatorServices) -> [String] {
        var settled: [String] = []
        for r in reports {
            settled.append(r.key)
            if r.key == "kv" {
                guard let st = try? KVCacheStats(serializedBytes: r.body) else { s.count("malformed_kv_cache_stats"); continue }
                gpuStats[nodeID] = st
                continue
            }
            guard let st = try? TierStats(serializedBytes: r.body) else { s.count("malformed_tier_stats"); continue }
            latest[nodeID] = (st, s.clock.monotonicNanos())
        }
        return settled
    }

    public func nodeDead(_ nodeID: String, _ s: CoordinatorServices) {
        guard let l = latest[nodeID] else { return }
        let lost = l.stats.tiers.filter { $0.kind != "nvme" }.reduce(0) { $0 + $1.blocks }
        if lost > 0 { s.event(nodeID, "tiers", "memory host dead: \(lost) blocks in DRAM/CXL lost") }
    }

    /// A disk fault is an operator's; the tiers' status is a read.
    public func access(_ envelope: Envelope) -> AccessNeed {
        guard case .featureRequest(let m)? = envelope.body, let r = try? TiersApiRequest(serializedBytes: m.body) else { return .operator }
        return r.hasDiskFault ? .operator : .anyRole
    }

    public func handleRequest(_ envelope: Envelope, _ s: CoordinatorServices) -> Envelope.OneOf_Body? {
        guard case .featureRequest(let m)? = envelope.body else { return nil }
        guard let request = try? TiersApiRequest(serializedBytes: m.body) else {
            var e = ErrorReply(); e.code = .invalidRequest; e.message = "the tiers feature expects a TiersApiRequest"
            return .error(e)
        }
        if request.hasDiskFault {
            var e = ErrorReply(); e.code = .invalidRequest
            guard let n = s.membership.nodes[request.node], n.info.kind == .memory else {
                e.message = "a disk fault needs a memory host in `node` ('\(request.node)' is not one)"
                return .error(e)
            }
            // Queued until acknowledged: a host that is suspect or restarting just now (a busy NVMe
            // tier can hold its heartbeats back) gets it when it answers again.
            var cmd = TierCommand(); cmd.diskFault = request.diskFault
            do { try s.enqueue(.feature(TierStoreHandler.feature, node: request.node, cmd)) } catch {
                e.message = "could not send the disk fault to \(request.node): \(error)"
                return .error(e)
            }
            s.event(request.node, "tiers", request.diskFault.full ? "NVMe disk full (fault, emulated)" : "NVMe disk freed")
            var reply = TiersApiReply(); reply.policy = policy
            reply.notes.append("\(request.node): NVMe tier's disk \(request.diskFault.full ? "full (emulated)" : "free again"), sent" + (n.info.state == .alive ? "" : " (the host is \(n.info.state); it gets it when it answers again)"))
            var out = FeatureMessage(); out.feature = TierStoreHandler.feature; out.body = (try? reply.serializedData()) ?? Data()
            return .featureReply(out)
        }
        if !request.node.isEmpty, latest[request.node] == nil, gpuStats[request.node] == nil {
            var e = ErrorReply(); e.code = .invalidRequest
            e.message = s.membership.nodes[request.node] == nil ? "no node '\(request.node)'; see `strato status`"
                : "node '\(request.node)' has reported no tiers (not a memory host, or it has not reported yet)"
            return .error(e)
        }
        var reply = TiersApiReply()
        reply.policy = policy
        if let r = scheduling?.jobs?.requests { reply.prefixRouting = r.prefixAffinity; reply.prefixRouted = UInt64(r.prefixRouted) }
        for (node, st) in gpuStats.sorted(by: { $0.key < $1.key }) where request.node.isEmpty || node == request.node {
            var g = GpuKVCache(); g.node = node; g.stats = st
            reply.gpus.append(g)
        }
        let now = s.clock.monotonicNanos()
        for (node, l) in latest.sorted(by: { $0.key < $1.key }) where request.node.isEmpty || node == request.node {
            var h = HostTiers()
            h.node = node
            h.alive = s.membership.nodes[node]?.info.state == .alive
            h.stats = l.stats
            h.ageSeconds = Double(now - l.at) / 1e9
            reply.hosts.append(h)
        }
        if reply.hosts.isEmpty { reply.notes.append("no memory host has reported its tiers yet") }
        var out = FeatureMessage(); out.feature = TierStoreHandler.feature; out.body = (try? reply.serializedData()) ?? Data()
        return .featureReply(out)
    }

    public func traceCounters() -> [String: [String: Double]] {
        var used: [String: Double] = [:], hits: [String: Double] = [:]
        for (node, l) in latest {
            for t in l.stats.tiers {
                used["\(node)/\(t.kind)"] = Double(t.usedBytes) / 1_048_576
                hits["\(node)/\(t.kind)"] = Double(t.hits)
            }
        }
        return used.isEmpty ? [:] : ["tier used MiB": used, "tier hits": hits]
    }
}

extension OperatorClient {
    /// The memory hosts' tiers as last reported (`node` empty: every host).
    public func tiers(node: String = "", timeoutMs: Int = 5000) throws -> TiersApiReply {
        var req = TiersApiRequest(); req.node = node
        var m = FeatureMessage(); m.feature = TierStoreHandler.feature; m.body = try req.serializedData()
        guard case .featureReply(let r) = try self.request(.featureRequest(m), timeoutMs: timeoutMs) else {
            throw OperatorClient.ClientError.unexpected("the coordinator answered a tiers request with something else")
        }
        return try TiersApiReply(serializedBytes: r.body)
    }

    /// Fills memory host `node`'s NVMe disk (emulated: its writes fail as on a full disk), or frees it.
    public func tierDiskFault(node: String, full: Bool, timeoutMs: Int = 5000) throws -> TiersApiReply {
        var req = TiersApiRequest(); req.node = node; req.diskFault.full = full
        var m = FeatureMessage(); m.feature = TierStoreHandler.feature; m.body = try req.serializedData()
        let answer = try self.request(.featureRequest(m), timeoutMs: timeoutMs)
        if case .error(let e) = answer { throw OperatorClient.ClientError.unexpected(e.message) }
        guard case .featureReply(let r) = answer else {
            throw OperatorClient.ClientError.unexpected("the coordinator answered a disk fault with something else")
        }
        return try TiersApiReply(serializedBytes: r.body)
    }
}

/// The table `strato tiers` prints: per host and tier, capacity, use, hit ratio, bandwidth.
public enum TiersTable {
    public static func render(_ reply: TiersApiReply) -> String {
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
        func mib(_ b: UInt64) -> String { String(format: "%.1f", Double(b) / 1_048_576) }
        var s = pad("HOST", 12) + pad("TIER", 6) + pad("CAP MiB", 10) + pad("USED MiB", 10) + pad("BLOCKS", 8) + pad("HITS", 8) + pad("HIT%", 7)
        s += pad("EVICT", 7) + pad("DEMOTE", 8) + pad("PROMOTE", 8) + pad("GB/s", 8) + pad("PROBED GB/s", 12) + "NOTE\n"
        var labels: [String] = []
        for h in reply.hosts {
            let lookups = h.stats.tiers.reduce(0) { $0 + $1.hits } + h.stats.misses
            for t in h.stats.tiers {
                let moved = t.bytesRead + t.bytesWritten
                s += pad(h.node, 12) + pad(t.kind, 6) + pad(mib(t.capacityBytes), 10) + pad(mib(t.usedBytes), 10) + pad("\(t.blocks)", 8)
                s += pad("\(t.hits)", 8) + pad(lookups > 0 ? String(format: "%.0f", 100 * Double(t.hits) / Double(lookups)) : "-", 7)
                s += pad("\(t.evictions)", 7) + pad("\(t.demotions)", 8) + pad("\(t.promotions)", 8)
                s += pad(t.seconds > 0 && moved > 0 ? String(format: "%.2f", Double(moved) / t.seconds / 1e9) : "-", 8)
                s += pad(t.probedBandwidthGbps > 0 ? String(format: "%.2f", t.probedBandwidthGbps) : "-", 12)
                s += (t.emulated ? "emulated" : "") + (h.alive ? "" : " host dead") + "\n"
                if !labels.contains(t.label) { labels.append(t.label) }
            }
            let errors = h.stats.errors.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
            s += "  \(h.node): \(h.stats.gets) gets, \(h.stats.puts) blocks put, \(h.stats.misses) misses, eviction \(h.stats.evictionPolicy)"
            s += (h.stats.recoveredBlocks > 0 ? ", \(h.stats.recoveredBlocks) blocks recovered from NVMe at start" : "")
            s += (errors.isEmpty ? "" : "; errors: " + errors.joined(separator: ", ")) + String(format: "; reported %.1f s ago\n", h.ageSeconds)
        }
        for l in labels { s += "  \(l)\n" }
        if !reply.gpus.isEmpty {
            s += "\n" + pad("GPU NODE", 14) + pad("LOOKUPS", 9) + pad("HITS", 7) + pad("HIT TOKENS", 12) + pad("PROMPT TOK", 12) + pad("LOADED MiB", 12)
            s += pad("STORED", 8) + pad("FALLBACK", 9) + pad("SWAP OUT/IN/LOST", 18) + pad("STAGED OUT/IN", 15) + "DECISIONS\n"
            for g in reply.gpus {
                let st = g.stats
                s += pad(g.node, 14) + pad("\(st.lookups)", 9) + pad("\(st.hits)", 7) + pad("\(st.hitTokens)", 12) + pad("\(st.promptTokens)", 12)
                s += pad(mib(st.loadedBytes), 12) + pad("\(st.storedChunks)", 8) + pad("\(st.fallbacks)", 9) + pad("\(st.swapOuts)/\(st.swapIns)/\(st.swapFallbacks)", 18)
                s += pad("\(st.stagedOuts)/\(st.stagedIns)", 15)
                s += st.decisions.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + "\n"
            }
        }
        let weights = reply.gpus.flatMap { g in g.stats.weights.map { (g.node, $0) } }
        if !weights.isEmpty {
            s += "\n" + pad("WEIGHTS OF", 24) + pad("NODE", 10) + pad("STATE", 10) + pad("HOST", 10) + pad("TIER", 6) + pad("LAYERS", 8) + pad("GB/STEP", 9)
            s += pad("STREAM s", 10) + pad("STEPS", 8) + pad("ROUNDS", 8) + pad("MiB MOVED", 10) + pad("REPUT", 6) + "STALLED s\n"
            for (node, w) in weights {
                s += pad(w.replicaID, 24) + pad(node, 10) + pad(w.state, 10) + pad(w.host.isEmpty ? "-" : w.host, 10) + pad(w.tier.isEmpty ? "-" : w.tier, 6)
                s += pad("\(w.offloadedLayers)/\(w.residentLayers + w.offloadedLayers)", 8) + pad(String(format: "%.1f", w.bytesPerStep / 1e9), 9)
                s += pad(String(format: "%.3f", w.streamSeconds), 10) + pad("\(w.steps)", 8) + pad("\(w.rounds)", 8) + pad(mib(w.bytesStreamed), 10)
                s += pad("\(w.reputs)", 6) + String(format: "%.1f", w.stalledSeconds) + "\n"
            }
            s += "  weights: layers streamed every step (modelled from the tier's figures; real bytes at the scale \(String(format: "1/%.0f", 1 / max(1e-12, weights[0].1.bytesScale)))), emulated\n"
        }
        s += "offload policy \(reply.policy.isEmpty ? "-" : reply.policy)\n"
        s += reply.notes.joined(separator: "\n")
        return s
    }
}
