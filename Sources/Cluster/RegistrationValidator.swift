import Protocol
import Scheduling

/// Checks that a registration describes resources a real node could have. Returns the problems
/// found, each naming the field and the value; an empty list means the registration is valid.
public enum RegistrationValidator {
    static let maxGPUsPerNode: UInt32 = 64
    static let maxTierBytes: UInt64 = 1 << 50       // 1 PiB
    static let maxRenderSlots: UInt32 = 4096

    public static func problems(in r: Register) -> [String] {
        var problems: [String] = []
        if r.nodeID.isEmpty { problems.append("node_id is empty") }
        if r.nodeID.utf8.count > 128 { problems.append("node_id is longer than 128 bytes") }
        if r.nodeID.hasPrefix("operator/") || r.nodeID == "coordinator" {
            problems.append("node_id '\(r.nodeID)' is reserved")
        }
        if r.instanceID.isEmpty { problems.append("instance_id is empty") }
        switch (r.kind, r.capabilities.kind) {
        case (.gpu, .gpu(let g)?): problems += gpuProblems(g)
        case (.memory, .memory(let m)?): problems += memoryProblems(m)
        case (.render, .render(let c)?): problems += renderProblems(c)
        case (.player, .player(let c)?): problems += playerProblems(c)
        case (.world, .world(let c)?): problems += worldProblems(c)
        case (.gpu, _), (.memory, _), (.render, _), (.player, _), (.world, _):
            problems.append("kind \(r.kind.name) needs \(r.kind.name) capabilities")
        default:
            problems.append("kind is unspecified")
        }
        return problems
    }

    static func gpuProblems(_ g: GpuCapabilities) -> [String] {
        var p: [String] = []
        guard let model = GPUCatalog.model(named: g.model) else {
            return ["gpu.model '\(g.model)' is not in the catalogue (known: \(GPUCatalog.names.joined(separator: ", ")))"]
        }
        if g.count == 0 || g.count > maxGPUsPerNode { p.append("gpu.count \(g.count) is outside 1...\(maxGPUsPerNode)") }
        // Plausible against the catalogue: from a MIG slice (1/8 of the card) to the card itself
        // plus 10 % (vendors' GiB/GB rounding). 1 B of memory or 0 TFLOPS is no real GPU.
        func plausible(_ v: Double, _ card: Double) -> Bool { v.isFinite && v >= card / 8 && v <= card * 1.1 }
        if !plausible(Double(g.memoryBytesPerGpu), Double(model.memoryBytes)) {
            p.append("gpu.memory_bytes_per_gpu \(g.memoryBytesPerGpu) is implausible for a \(model.name) (\(model.memoryGiB) GiB; accepted: 1/8 to 1.1× of it)")
        }
        if !plausible(g.memoryBandwidthGbps, model.memoryBandwidthGBps) {
            p.append("gpu.memory_bandwidth_gbps \(g.memoryBandwidthGbps) is implausible for a \(model.name) (\(model.memoryBandwidthGBps) GB/s; accepted: 1/8 to 1.1× of it)")
        }
        if !plausible(g.fp16Tflops, model.fp16TFLOPS) {
            p.append("gpu.fp16_tflops \(g.fp16Tflops) is implausible for a \(model.name) (\(model.fp16TFLOPS) TFLOPS; accepted: 1/8 to 1.1× of it)")
        }
        return p
    }

    static func memoryProblems(_ m: MemoryCapabilities) -> [String] {
        var p: [String] = []
        if m.tiers.isEmpty { p.append("memory.tiers is empty") }
        var seen = Set<Int>()
        for (i, t) in m.tiers.enumerated() {
            if t.kind == .unspecified { p.append("memory.tiers[\(i)].kind is unspecified") }
            if !seen.insert(t.kind.rawValue).inserted { p.append("memory.tiers[\(i)]: tier \(t.kind.name) appears twice") }
            if t.capacityBytes == 0 || t.capacityBytes > maxTierBytes {
                p.append("memory.tiers[\(i)].capacity_bytes \(t.capacityBytes) is outside 1 B...1 PiB")
            }
            if !(t.bandwidthGbps > 0) || !t.bandwidthGbps.isFinite { p.append("memory.tiers[\(i)].bandwidth_gbps \(t.bandwidthGbps) must be positive") }
            if !(t.latencyNs > 0) || !t.latencyNs.isFinite { p.append("memory.tiers[\(i)].latency_ns \(t.latencyNs) must be positive") }
        }
        return p
    }

    static func renderProblems(_ r: RenderCapabilities) -> [String] {
        var p: [String] = []
        if r.siteKind != .cloud && r.siteKind != .edge { p.append("render.site_kind must be cloud or edge") }
        if r.renderSlots == 0 || r.renderSlots > maxRenderSlots { p.append("render.render_slots \(r.renderSlots) is outside 1...\(maxRenderSlots)") }
        if !r.gpuModel.isEmpty && GPUCatalog.model(named: r.gpuModel) == nil {
            p.append("render.gpu_model '\(r.gpuModel)' is not in the catalogue")
        }
        return p
    }

    static func playerProblems(_ c: PlayerCapabilities) -> [String] {
        var p: [String] = []
        if DeviceCatalog.device(named: c.device) == nil { p.append("player.device '\(c.device)' is not in the catalogue (known: \(DeviceCatalog.deviceNames.joined(separator: ", ")))") }
        if DeviceCatalog.network(named: c.network) == nil { p.append("player.network '\(c.network)' is not a network class (known: \(DeviceCatalog.networkNames.joined(separator: ", ")))") }
        if !(c.gpuTflops > 0 && c.gpuTflops < 1000) { p.append("player.gpu_tflops \(c.gpuTflops) is outside (0, 1000)") }
        if !(c.memoryGib > 0 && c.memoryGib <= 1024) { p.append("player.memory_gib \(c.memoryGib) is outside (0, 1024]") }
        return p
    }

    static func worldProblems(_ c: WorldCapabilities) -> [String] {
        (c.tickHz >= 1 && c.tickHz <= 1000) ? [] : ["world.tick_hz \(c.tickHz) is outside 1...1000"]
    }
}
