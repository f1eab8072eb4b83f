import Cluster
import Protocol

/// What a GPU node does with offline jobs: start at a placement, stop at a checkpoint, and report
/// progress. Two implementations sit behind it: `EmulatedJobRunner` (no GPU here: progress from
/// published measurements, labelled emulated) and `ProcessJobRunner` (a real command per job,
/// `CUDA_VISIBLE_DEVICES` set to the placement, for nodes with real GPUs).
public protocol JobRunner: AnyObject {
    /// Where job spans and instants go: the node's tracer, handed over when the session starts.
    var tracer: Tracer { get set }
    var runningIDs: [String] { get }
    func busyGPUs() -> Set<UInt32>
    func start(_ s: StartJob, commandID: UInt64, wallNanos: Int64) -> (ok: Bool, detail: String)
    /// Stops a job at a checkpoint and says the work saved there.
    func preempt(_ id: String, wallNanos: Int64) -> PreemptOutcome
    /// Progress for the next heartbeat; terminal reports repeat until settled.
    func reports(wallNanos: Int64) -> [JobReport]
    func settle(_ ids: [String])
    /// When a job is next due to change state (see `FeatureHandler.nextReportDue`).
    func nextReportDue(wallNanos: Int64) -> Int64?
    /// The agent stops: end whatever runs outside its process.
    func stopAll()
}

extension JobRunner {
    public func nextReportDue(wallNanos: Int64) -> Int64? { nil }
    public func stopAll() {}
}

extension EmulatedJobRunner: JobRunner {}

/// A preemption's outcome: the work in the checkpoint the job stopped at (nil: it was not running).
public struct PreemptOutcome: Sendable, Equatable {
    public var checkpointedWork: Double?
    public var detail: String
    public init(checkpointedWork: Double?, detail: String) { self.checkpointedWork = checkpointedWork; self.detail = detail }
}
