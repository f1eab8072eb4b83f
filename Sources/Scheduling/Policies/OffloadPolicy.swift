/// What lives where in the memory hosts' tiers, and whether a cached prefix is worth loading:
/// the memory-tiers feature's policies. Pure, shared by GPU agents and the twin.

/// One tier as the policy sees it: bandwidth and latency as the memory host registered them.
public struct TierFigures: Sendable, Equatable {
    public var kind: String
    public var bandwidthBytesPerSecond: Double
    public var latencySeconds: Double
    public init(kind: String, bandwidthBytesPerSecond: Double, latencySeconds: Double) {
        self.kind = kind; self.bandwidthBytesPerSecond = bandwidthBytesPerSecond; self.latencySeconds = latencySeconds
    }
}

/// A cached prefix found for a request, and what loading or recomputing it would take.
public struct PrefixChoice: Sendable, Equatable {
    /// Cached prompt tokens and their real KV bytes.
    public var tokens: Int
    public var bytes: Double
    /// The tier the first chunk sits in, and the figures of the path: tier, then network.
    public var tier: TierFigures
    public var linkBytesPerSecond: Double
    public var linkLatencySeconds: Double
    /// Seconds the GPU would take to prefill those tokens again.
    public var recomputeSeconds: Double
    /// Requests waiting for that GPU besides this one: prefill time spent here is taken from them.
    public var gpuBacklog = 0
    public init(tokens: Int, bytes: Double, tier: TierFigures, linkBytesPerSecond: Double, linkLatencySeconds: Double, recomputeSeconds: Double) {
        self.tokens = tokens; self.bytes = bytes; self.tier = tier; self.linkBytesPerSecond = linkBytesPerSecond
        self.linkLatencySeconds = linkLatencySeconds; self.recomputeSeconds = recomputeSeconds
    }

    /// Seconds to bring the bytes to the GPU: the slower of the tier and the link, plus both latencies.
    public var loadSeconds: Double {
        let bw = [tier.bandwidthBytesPerSecond, linkBytesPerSecond].filter { $0 > 0 }.min() ?? .infinity
        return bytes / bw + tier.latencySeconds + linkLatencySeconds
    }
}

/// A chunk about to be stored: its real bytes, the host's tiers (fastest first), the link, and
/// what prefilling it again would cost.
public struct ChunkPlacement: Sendable, Equatable {
    public var bytes: Double
    public var tiers: [TierFigures]
    public var linkBytesPerSecond: Double
    public var linkLatencySeconds: Double
    public var recomputeSeconds: Double
    /// Requests that carried this chunk's prefix so far, this one included.
    public var seen: Int
    public init(bytes: Double, tiers: [TierFigures], linkBytesPerSecond: Double, linkLatencySeconds: Double, recomputeSeconds: Double, seen: Int) {
        self.bytes = bytes; self.tiers = tiers; self.linkBytesPerSecond = linkBytesPerSecond
        self.linkLatencySeconds = linkLatencySeconds; self.recomputeSeconds = recomputeSeconds; self.seen = seen
    }
    /// Loading it back from `tier`.
    public func load(from tier: TierFigures) -> PrefixChoice {
        PrefixChoice(tokens: 0, bytes: bytes, tier: tier, linkBytesPerSecond: linkBytesPerSecond, linkLatencySeconds: linkLatencySeconds, recomputeSeconds: recomputeSeconds)
    }
}

public protocol OffloadPolicy: Sendable {
    var name: String { get }
    /// The tier a new chunk goes to first (demotion moves it further down as it cools), or nil to
    /// keep it nowhere, and why.
    func storeTier(_ c: ChunkPlacement) -> (tier: String?, reason: String)
    /// Whether to load a cached prefix rather than prefill it, and why.
    func load(_ c: PrefixChoice) -> (load: Bool, reason: String)
}

public enum OffloadPolicies {
    public static let names = ["none", "dram", "cxl", "nvme", "tiered"]
    public static func named(_ name: String) -> OffloadPolicy? {
        switch name {
        case "none": return NoOffload()
        case "dram", "cxl", "nvme": return SingleTierOffload(tier: name)
        case "tiered": return TieredOffload()
        default: return nil
        }
    }
}

/// No offload: every prompt is prefilled on its GPU.
public struct NoOffload: OffloadPolicy {
    public let name = "none"
    public init() {}
    public func storeTier(_ c: ChunkPlacement) -> (tier: String?, reason: String) { (nil, "policy none") }
    public func load(_ c: PrefixChoice) -> (load: Bool, reason: String) { (false, "policy none") }
}

/// One tier: every chunk goes there (and falls further only by eviction); every cached prefix is
/// loaded, whatever it costs (LMCache's behaviour with one backend).
public struct SingleTierOffload: OffloadPolicy {
    public let tier: String
    public var name: String { tier }
    public init(tier: String) { self.tier = tier }
    public func storeTier(_ c: ChunkPlacement) -> (tier: String?, reason: String) {
        c.tiers.contains { $0.kind == tier } ? (tier, "policy \(tier)") : (c.tiers.first?.kind, "host has no \(tier): fastest")
    }
    public func load(_ c: PrefixChoice) -> (load: Bool, reason: String) { (true, "always load") }
}

/// Ours: placement by expected reuse and cost, loading by cost.
/// - A chunk whose prefix has been seen before (a session's later turn, a shared system prompt)
///   is likely to be asked for again soon: it goes to the fastest tier.
/// - A first sighting goes to the slowest tier from which loading it back still beats prefilling
///   it on the GPU (fast memory is kept for what proves popular; a hit promotes a chunk to the
///   top); where no tier beats recompute it is not stored at all.
/// - A cached prefix is loaded when bringing its bytes over (tier bandwidth, link, latencies)
///   beats prefilling it again, or when other requests wait for the GPU: a load occupies the
///   link, not the GPU, so recomputing there would delay them by as much as it took. Otherwise the
///   GPU recomputes it, and each decision is counted by its reason.
public struct TieredOffload: OffloadPolicy {
    public let name = "tiered"
    /// Loading must beat recompute by this factor (covers the estimate's error).
    public var margin = 0.9
    public init() {}

    public func storeTier(_ c: ChunkPlacement) -> (tier: String?, reason: String) {
        let worth = c.tiers.filter { c.load(from: $0).loadSeconds < c.recomputeSeconds * margin }
        guard let fastest = worth.first else { return (nil, "no tier beats recompute") }
        if c.seen >= 2 { return (fastest.kind, "popular: fastest tier") }
        return (worth.last!.kind, "first seen: slowest tier that beats recompute")
    }

    public func load(_ c: PrefixChoice) -> (load: Bool, reason: String) {
        let l = c.loadSeconds
        if l < c.recomputeSeconds * margin { return (true, "load-faster") }
        if c.gpuBacklog > 0 { return (true, "load-frees-busy-gpu") }
        return (false, "recompute-faster")
    }
}
