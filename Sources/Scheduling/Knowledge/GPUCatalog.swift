import Foundation

/// How a GPU talks to its peers in a node (the registration's `Interconnect` on the wire).
public enum GPULink: String, Sendable, Equatable { case pcie, nvlink }

/// A GPU model as published by its vendor. Emulated GPU nodes are described from these figures.
public struct GPUModel: Sendable, Equatable {
    public let name: String
    public let memoryGiB: Double
    /// Peak device-memory bandwidth, GB/s.
    public let memoryBandwidthGBps: Double
    /// Dense FP16/BF16 tensor-core TFLOPS (no sparsity); FP32 for GPUs without tensor cores.
    public let fp16TFLOPS: Double
    /// Per-GPU GPU-to-GPU bandwidth on the fastest interconnect it supports, GB/s.
    public let interconnect: GPULink
    public let interconnectGBps: Double
    public let source: String

    public var memoryBytes: UInt64 { UInt64(memoryGiB * 1_073_741_824) }
}

/// The catalogue of real GPU models. Figures are from the vendors' datasheets (cited per row);
/// emulated nodes take their memory, bandwidth and compute from here, never from made-up numbers.
public enum GPUCatalog {
    public static let models: [GPUModel] = [
        GPUModel(name: "K80", memoryGiB: 12, memoryBandwidthGBps: 240, fp16TFLOPS: 4.37,
                 interconnect: .pcie, interconnectGBps: 16,
                 source: "NVIDIA Tesla K80 datasheet (per GK210 GPU: 12 GB, 240 GB/s, 4.37 TFLOPS FP32 boost)"),
        GPUModel(name: "P100", memoryGiB: 16, memoryBandwidthGBps: 732, fp16TFLOPS: 18.7,
                 interconnect: .pcie, interconnectGBps: 32,
                 source: "NVIDIA Tesla P100 PCIe datasheet (16 GB HBM2, 732 GB/s, 18.7 TFLOPS FP16)"),
        GPUModel(name: "V100", memoryGiB: 16, memoryBandwidthGBps: 900, fp16TFLOPS: 125,
                 interconnect: .nvlink, interconnectGBps: 300,
                 source: "NVIDIA V100 SXM2 datasheet (16 GB HBM2, 900 GB/s, 125 TFLOPS tensor, NVLink 300 GB/s)"),
        GPUModel(name: "V100-32GB", memoryGiB: 32, memoryBandwidthGBps: 900, fp16TFLOPS: 125,
                 interconnect: .nvlink, interconnectGBps: 300,
                 source: "NVIDIA V100 SXM2 datasheet (32 GB HBM2, 900 GB/s, 125 TFLOPS tensor, NVLink 300 GB/s)"),
        GPUModel(name: "T4", memoryGiB: 16, memoryBandwidthGBps: 320, fp16TFLOPS: 65,
                 interconnect: .pcie, interconnectGBps: 32,
                 source: "NVIDIA T4 datasheet (16 GB GDDR6, 320 GB/s, 65 TFLOPS FP16 mixed precision, PCIe Gen3 x16)"),
        GPUModel(name: "A10", memoryGiB: 24, memoryBandwidthGBps: 600, fp16TFLOPS: 125,
                 interconnect: .pcie, interconnectGBps: 64,
                 source: "NVIDIA A10 datasheet (24 GB GDDR6, 600 GB/s, 125 TFLOPS FP16 tensor, PCIe Gen4 64 GB/s)"),
        GPUModel(name: "A40", memoryGiB: 48, memoryBandwidthGBps: 696, fp16TFLOPS: 149.7,
                 interconnect: .nvlink, interconnectGBps: 112.5,
                 source: "NVIDIA A40 datasheet (48 GB GDDR6, 696 GB/s, 149.7 TFLOPS FP16 tensor, NVLink 112.5 GB/s)"),
        GPUModel(name: "L4", memoryGiB: 24, memoryBandwidthGBps: 300, fp16TFLOPS: 121,
                 interconnect: .pcie, interconnectGBps: 64,
                 source: "NVIDIA L4 datasheet (24 GB GDDR6, 300 GB/s, 242 TFLOPS FP16 with sparsity = 121 dense)"),
        GPUModel(name: "L40S", memoryGiB: 48, memoryBandwidthGBps: 864, fp16TFLOPS: 362.05,
                 interconnect: .pcie, interconnectGBps: 64,
                 source: "NVIDIA L40S datasheet (48 GB GDDR6, 864 GB/s, 733 TFLOPS FP16 with sparsity = 362 dense)"),
        GPUModel(name: "A100-40GB", memoryGiB: 40, memoryBandwidthGBps: 1555, fp16TFLOPS: 312,
                 interconnect: .nvlink, interconnectGBps: 600,
                 source: "NVIDIA A100 datasheet (SXM4 40 GB HBM2, 1,555 GB/s, 312 TFLOPS FP16 tensor, NVLink 600 GB/s)"),
        GPUModel(name: "A100-80GB", memoryGiB: 80, memoryBandwidthGBps: 2039, fp16TFLOPS: 312,
                 interconnect: .nvlink, interconnectGBps: 600,
                 source: "NVIDIA A100 datasheet (SXM4 80 GB HBM2e, 2,039 GB/s, 312 TFLOPS FP16 tensor, NVLink 600 GB/s)"),
        GPUModel(name: "H100", memoryGiB: 80, memoryBandwidthGBps: 3350, fp16TFLOPS: 989.5,
                 interconnect: .nvlink, interconnectGBps: 900,
                 source: "NVIDIA H100 datasheet (SXM5 80 GB HBM3, 3.35 TB/s, 1,979 TFLOPS FP16 with sparsity = 989.5 dense, NVLink 900 GB/s)"),
        GPUModel(name: "H200", memoryGiB: 141, memoryBandwidthGBps: 4800, fp16TFLOPS: 989.5,
                 interconnect: .nvlink, interconnectGBps: 900,
                 source: "NVIDIA H200 datasheet (SXM 141 GB HBM3e, 4.8 TB/s, 1,979 TFLOPS FP16 with sparsity, NVLink 900 GB/s)"),
    ]

    /// Looks a model up by name, ignoring case and the common aliases ("A100" is the 80 GB part,
    /// "A100-80G" and "a100_80gb" spell the same model).
    public static func model(named name: String) -> GPUModel? {
        let key = normalize(name)
        let aliases = ["A100": "A100-80GB", "H100-80GB": "H100", "V100-16GB": "V100", "H100-SXM": "H100"]
        let target = aliases[key].map(normalize) ?? key
        return models.first { normalize($0.name) == target }
    }

    public static var names: [String] { models.map(\.name) }

    /// The catalogue's model for a GPU as `nvidia-smi` names it ("NVIDIA H200", "NVIDIA
    /// A100-SXM4-80GB", "Tesla V100-SXM2-32GB", "NVIDIA A10G"), its memory telling variants of one
    /// family apart where the name does not; nil for a GPU the catalogue does not hold.
    public static func model(smiName: String, memoryMiB: Int) -> GPUModel? {
        var u = smiName.uppercased()
        for prefix in ["NVIDIA ", "TESLA "] where u.hasPrefix(prefix) { u.removeFirst(prefix.count) }
        guard let family = u.split(whereSeparator: { $0 == " " || $0 == "-" }).first.map(String.init) else { return nil }
        let gib = Double(memoryMiB) / 1024
        switch family {
        case "H200": return model(named: "H200")
        case "H100": return model(named: "H100")
        case "A100": return model(named: gib > 48 ? "A100-80GB" : "A100-40GB")
        case "V100", "V100S": return model(named: gib > 20 ? "V100-32GB" : "V100")
        case "A10", "A10G": return model(named: "A10")   // AWS's A10G: the A10's chip and memory
        case "A40", "L4", "L40S", "T4", "K80", "P100": return model(named: family)
        default: return nil
        }
    }

    private static func normalize(_ s: String) -> String {
        var u = s.uppercased().replacingOccurrences(of: "_", with: "-")
        if u.hasSuffix("G") && !u.hasSuffix("GB") { u += "B" }
        return u
    }
}
