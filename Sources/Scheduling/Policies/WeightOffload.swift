import Foundation

/// Weight offload for a model larger than its GPUs (FlexGen's setting, D2.1 T2.3: Llama-2-70B on
/// one A40): the layers that fit stay on the GPU, the rest live in a memory host's tier and are
/// streamed to the GPU every step, layer by layer while the previous one computes. A step then
/// takes the longer of its compute and its streaming, so decode throughput follows the tier's
/// bandwidth: DRAM > CXL > NVMe.
public struct WeightOffloadPlan: Sendable, Equatable {
    public let layers: Int
    /// Bytes of one layer's weights on one GPU (the model's weights ÷ layers ÷ tensor parallel;
    /// embeddings are counted in the layers).
    public let layerBytes: Double
    public let residentLayers: Int
    /// GPU bytes left for the KV cache.
    public let kvBytes: Double
    public var offloadedLayers: Int { layers - residentLayers }
    public var residentWeightBytes: Double { Double(residentLayers) * layerBytes }
    /// Bytes streamed to each GPU every step.
    public var streamedBytesPerStep: Double { Double(offloadedLayers) * layerBytes }

    /// Share of the usable GPU memory (90 %, as the serving engine) kept for the KV cache before
    /// layers are placed: a large batch is what makes streaming pay (FlexGen), and it needs KV.
    public static let kvShare = 0.3

    /// The plan for `arch` on `tensorParallel` × `gpu`; nil when the whole model fits and leaves
    /// at least a tenth of the memory for KV (no offload needed).
    public static func plan(arch: ModelArchitecture, gpu: GPUModel, tensorParallel: Int) -> WeightOffloadPlan? {
        let tp = Double(max(1, tensorParallel))
        let usable = gpu.memoryGiB * 1_073_741_824 * 0.9
        let weights = arch.weightBytes / tp
        guard weights > usable * 0.9 else { return nil }
        let layerBytes = weights / Double(arch.layers)
        let resident = min(arch.layers - 1, max(0, Int(usable * (1 - kvShare) / layerBytes)))
        return WeightOffloadPlan(layers: arch.layers, layerBytes: layerBytes, residentLayers: resident, kvBytes: usable - Double(resident) * layerBytes)
    }

    /// Seconds to stream the offloaded layers once: each layer through the slower of the tier and
    /// the link, plus one access latency of each per layer.
    public func streamSeconds(tier: TierFigures, linkBytesPerSecond: Double, linkLatencySeconds: Double) -> Double {
        let bw = [tier.bandwidthBytesPerSecond, linkBytesPerSecond].filter { $0 > 0 }.min() ?? .infinity
        return streamedBytesPerStep / bw + Double(offloadedLayers) * (tier.latencySeconds + linkLatencySeconds)
    }

    /// The key of a layer's weights on a memory host: by (model, tensor-parallel degree, layer),
    /// so every replica of the model shares one copy.
    public static func shardKey(model: String, tensorParallel: Int, layer: Int) -> String {
        "w/\(model)/tp\(tensorParallel)/layer-\(layer)"
    }
}

extension OffloadPolicy {
    /// The tier a model's offloaded layers live in, and why: they are read every step, so the
    /// fastest the policy allows. `none` keeps no weights off the GPU.
    public func weightTier(_ tiers: [TierFigures]) -> (tier: String?, reason: String) {
        switch self {
        case is NoOffload: return (nil, "policy none: no weight offload")
        case let p as SingleTierOffload:
            return tiers.contains { $0.kind == p.tier } ? (p.tier, "policy \(p.tier)") : (tiers.first?.kind, "host has no \(p.tier): fastest")
        default:
            let best = tiers.max { $0.bandwidthBytesPerSecond < $1.bandwidthBytesPerSecond }
            return (best?.kind, "read every step: fastest tier")
        }
    }
}

extension OffloadPolicy {
    /// Whether a preempted request's KV goes to a memory host (and comes back) instead of being
    /// recomputed, and why. `c` is the KV's bytes from the tier `swapTier` picks (the round trip is
    /// twice its load) against prefilling its tokens again. One tier: always (LMCache-style
    /// policies keep what they can); tiered: when the round trip beats recompute; none: never.
    public func swaps(_ c: PrefixChoice) -> (swap: Bool, reason: String) {
        switch self {
        case is NoOffload: return (false, "policy none")
        case is SingleTierOffload: return (true, "always swap")
        default:
            return 2 * c.loadSeconds < c.recomputeSeconds * 0.9 ? (true, "swap-faster") : (false, "recompute-faster")
        }
    }

    /// The tier swapped-out KV goes to: it comes back soon, so the fastest the policy allows.
    public func swapTier(_ tiers: [TierFigures]) -> (tier: String?, reason: String) { weightTier(tiers) }
}
