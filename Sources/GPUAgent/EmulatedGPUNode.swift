import Cluster
import Foundation
import Protocol
import Scheduling

/// A GPU node whose GPUs are emulated from the published figures of a real model in the
/// catalogue. It sits behind `AgentBehavior`, the same interface a node with real GPUs uses, and
/// says in its capabilities (`emulated`, `source`) that it is an emulation. What it runs comes from
/// the feature handlers it hosts (`handlers`).
public final class EmulatedGPUNode: AgentBehavior {
    public let model: GPUModel
    public let count: UInt32
    public let interconnect: Interconnect?
    /// Work placed on each GPU (job or instance ids); empty until scheduling places work.
    private var placements: [[String]]

    public enum ConfigError: Error, CustomStringConvertible {
        case unknownModel(String)
        case badCount(Int)
        public var description: String {
            switch self {
            case .unknownModel(let m): return "unknown GPU model '\(m)'; known models: \(GPUCatalog.names.joined(separator: ", "))"
            case .badCount(let n): return "GPU count \(n) must be between 1 and 64"
            }
        }
    }

    /// Real devices this node's jobs run on (process backend on a host with nvidia-smi): the node
    /// then says it is not emulated, and names them.
    public var realDevices: [NvidiaSMI.GPU]?

    /// The features this node offers (jobs, inference, ...), set by the composition root.
    public var handlers: [FeatureHandler] = []
    /// GPU indices the features hold now (for telemetry), set with the handlers.
    public var busyGPUs: () -> Set<UInt32> = { [] }

    public init(modelName: String, count: Int, interconnect: Interconnect? = nil) throws {
        guard let model = GPUCatalog.model(named: modelName) else { throw ConfigError.unknownModel(modelName) }
        guard (1...64).contains(count) else { throw ConfigError.badCount(count) }
        self.model = model
        self.count = UInt32(count)
        self.interconnect = interconnect
        self.placements = Array(repeating: [], count: count)
    }

    public var kind: NodeKind { .gpu }

    public func capabilities() -> Capabilities {
        var c = Capabilities()
        c.gpu = GPUCatalog.capabilities(for: model, count: count, interconnect: interconnect)
        if let real = realDevices, !real.isEmpty {
            c.gpu.emulated = false
            c.gpu.source = "nvidia-smi: " + real.prefix(Int(count)).map { "\($0.index): \($0.name) \($0.memoryMiB) MiB" }.joined(separator: "; ")
        }
        return c
    }

    public func fillTelemetry(_ telemetry: inout Telemetry) {
        let busy = busyGPUs()
        telemetry.gpus = (0..<Int(count)).map { i in
            var g = GpuTelemetry()
            g.index = UInt32(i)
            g.utilization = placements[i].isEmpty && !busy.contains(UInt32(i)) ? 0 : 1
            g.memoryUsedBytes = 0
            return g
        }
    }

    public func running() -> [String] { Array(Set(placements.joined())).sorted() }

    public func shutdown() {}
}
