import Cluster
import Foundation
import GPUAgent
import Protocol

/// Feature "jobs", agent side: runs offline jobs on a GPU node's GPUs through a `JobRunner`
/// (emulated, or real processes), answers `JobCommand`s, and reports each job as a
/// `FeatureReport` (key = job id, body = `JobReport`), terminal reports repeated until settled.
public final class JobsHandler: FeatureHandler {
    public static let feature = "jobs"
    public var feature: String { JobsHandler.feature }
    public let runner: JobRunner
    let gpuModel: String
    let gpuCount: UInt32

    public init(runner: JobRunner, gpuModel: String, gpuCount: UInt32) {
        self.runner = runner
        self.gpuModel = gpuModel
        self.gpuCount = gpuCount
    }

    public func attach(_ context: NodeContext) { runner.tracer = context.tracer }

    public func execute(_ body: [UInt8], commandID: UInt64, wallNanos: Int64) -> FeatureOutcome {
        guard let command = try? JobCommand(serializedBytes: body) else { return .refused("not a JobCommand") }
        switch command.action {
        case .start(let s)?:
            guard s.gpuModel == gpuModel, s.gpus.allSatisfy({ $0 < gpuCount }) else {
                return .refused("start_job for \(s.gpus.count)x\(s.gpuModel) GPUs \(s.gpus) does not match this node's \(gpuCount)x\(gpuModel)")
            }
            let r = runner.start(s, commandID: commandID, wallNanos: wallNanos)
            return FeatureOutcome(ok: r.ok, detail: r.detail)
        case .preempt(let p)?:
            let outcome = runner.preempt(p.jobID, wallNanos: wallNanos)
            var result = PreemptJobResult()
            result.jobID = p.jobID
            result.checkpointedWork = outcome.checkpointedWork ?? -1
            return FeatureOutcome(ok: true, detail: outcome.detail, result: try? result.serializedBytes())
        case nil:
            return .refused("a JobCommand with no action")
        }
    }

    public func reports(wallNanos: Int64) -> [FeatureReport] {
        runner.reports(wallNanos: wallNanos).map { report(key: $0.jobID, $0) }
    }

    public func settle(_ keys: [String]) { runner.settle(keys) }
    public func nextReportDue(wallNanos: Int64) -> Int64? { runner.nextReportDue(wallNanos: wallNanos) }
    public func running() -> [String] { runner.runningIDs }
    public func shutdown() { runner.stopAll() }
    public var busyGPUs: Set<UInt32> { runner.busyGPUs() }
}
