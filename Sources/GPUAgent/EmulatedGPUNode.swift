import Cluster
import Foundation
import Protocol
import Scheduling

/// A GPU node whose GPUs are emulated from the published figures of a real model in the
/// catalogue. It sits behind `AgentBehavior`, the same interface a node with real GPUs uses, and
/// says in its capabilities (`emulated`, `source`) that it is an emulation.
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

    /// Runs offline jobs (emulated, or real processes); nil when the node was started without job knowledge.
    public var runner: JobRunner?
    /// Real devices this node's jobs run on (process backend on a host with nvidia-smi): the node
    /// then says it is not emulated, and names them.
    public var realDevices: [NvidiaSMI.GPU]?

    /// Serves inference replicas (emulated); nil when the node was started without knowledge.
    public var replicas: EmulatedReplicas?

    public init(modelName: String, count: Int, interconnect: Interconnect? = nil, runner: JobRunner? = nil, replicas: EmulatedReplicas? = nil) throws {
        self.runner = runner
        self.replicas = replicas
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
        let busy = (runner?.busyGPUs() ?? []).union(replicas?.busyGPUs() ?? [])
        telemetry.gpus = (0..<Int(count)).map { i in
            var g = GpuTelemetry()
            g.index = UInt32(i)
            g.utilization = placements[i].isEmpty && !busy.contains(UInt32(i)) ? 0 : 1
            g.memoryUsedBytes = 0
            return g
        }
    }

    public func running() -> [String] { Array(Set(placements.joined()).union(runner?.runningIDs ?? []).union(replicas?.replicaIDs ?? [])).sorted() }

    public func execute(_ command: Command) -> (ok: Bool, detail: String)? {
        let now = Int64(Date().timeIntervalSince1970 * 1e9)
        switch command.action {
        case .startJob(let s)?:
            guard let runner else { return (false, "this GPU agent runs no jobs (started without --data)") }
            guard s.gpuModel == model.name, s.gpus.allSatisfy({ $0 < count }) else {
                return (false, "start_job for \(s.gpus.count)x\(s.gpuModel) GPUs \(s.gpus) does not match this node's \(count)x\(model.name)")
            }
            return runner.start(s, commandID: command.commandID, wallNanos: now)
        case .preemptJob(let p)?:
            guard let runner else { return (false, "this GPU agent runs no jobs") }
            return runner.preempt(p.jobID, wallNanos: now)
        case .startReplica(let s)?:
            guard let replicas else { return (false, "this GPU agent serves no replicas (started without --data)") }
            return replicas.start(s, nodeGPUModel: model.name, nodeGPUs: count, busy: runner?.busyGPUs() ?? [], wallNanos: now)
        case .stopReplica(let s)?:
            guard let replicas else { return (false, "this GPU agent serves no replicas") }
            return replicas.stop(s.replicaID, wallNanos: now)
        case .serveRequests(let s)?:
            guard let replicas else { return (false, "this GPU agent serves no replicas") }
            return replicas.serve(s, wallNanos: now)
        default:
            return nil
        }
    }

    public func jobReports(wallNanos: Int64) -> [JobReport] { runner?.reports(wallNanos: wallNanos) ?? [] }
    public func settle(_ jobIDs: [String]) { runner?.settle(jobIDs) }
    public func requestResults(wallNanos: Int64) -> [RequestResult] { replicas?.results(wallNanos: wallNanos) ?? [] }
    public func settleRequests(_ requestIDs: [String]) { replicas?.settle(requestIDs) }
    public func nextReportDue(wallNanos: Int64) -> Int64? {
        [runner?.nextReportDue(wallNanos: wallNanos), replicas?.nextReportDue(wallNanos: wallNanos)].compactMap { $0 }.min()
    }
    public func shutdown() { runner?.stopAll() }
}
