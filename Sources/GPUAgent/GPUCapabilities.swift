import Protocol
import Scheduling

extension GPUCatalog {
    /// Describes `count` emulated GPUs of `model` as registration capabilities (resources.proto).
    public static func capabilities(for model: GPUModel, count: UInt32, interconnect: Interconnect? = nil) -> GpuCapabilities {
        let native: Interconnect = model.interconnect == .nvlink ? .nvlink : .pcie
        var caps = GpuCapabilities()
        caps.model = model.name
        caps.count = count
        caps.memoryBytesPerGpu = model.memoryBytes
        caps.memoryBandwidthGbps = model.memoryBandwidthGBps
        caps.fp16Tflops = model.fp16TFLOPS
        caps.interconnect = interconnect ?? native
        caps.interconnectGbps = (interconnect ?? native) == .pcie && native != .pcie ? 32 : model.interconnectGBps
        caps.emulated = true
        caps.source = model.source
        return caps
    }
}
