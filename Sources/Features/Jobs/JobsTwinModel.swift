import Scheduling

/// Feature "jobs" in the digital twin: what the GPU agents do with the scheduler's start and
/// preempt decisions, on virtual time (trace seconds). A run makes progress at the rate the
/// execution model gives (the same `ExecutionModel` the emulated job runner uses) after its
/// restart overhead, checkpoints as it does, and is measured the way an agent measures it: the
/// mean step time over an interval's steps with the step-to-step variance Vidur measured.
/// Pure: the twin's event loop asks it and pushes the events it names.
public struct JobsTwinModel {
    public struct Run {
        public var generation: Int
        public var key: ConfigKey
        public var nodeID: String
        public var startedAt: Double
        public var overhead: Double
        public var resume: Double
        public var rate: Double
        public var total: Double
        var measurements = 0
        public var progressFrom: Double { startedAt + overhead }
    }

    public let execution: ExecutionModel
    public private(set) var runs: [String: Run] = [:]
    /// Per job, bumped whenever a run ends: events of an earlier run no longer count.
    private var generations: [String: Int] = [:]
    /// Runs on a node that crashed and that the scheduler has not been told about yet.
    private var crashed = Set<String>()
    /// GPU-seconds each GPU model spent running jobs (overheads included).
    public private(set) var busyGPUSeconds: [String: Double] = [:]

    public init(execution: ExecutionModel) { self.execution = execution }

    public func isCurrent(_ job: String, generation: Int) -> Bool { generations[job, default: 0] == generation }

    /// The work a run has done by `now` (reads only the run: the scheduler may be mid-step).
    public func work(_ job: String, at now: Double) -> Double? {
        guard let r = runs[job] else { return nil }
        return min(r.resume + max(0, now - r.progressFrom) * r.rate, r.total)
    }

    /// Work checkpointed by `now`.
    public func checkpointed(_ job: String, at now: Double) -> Double? {
        guard let r = runs[job] else { return nil }
        return execution.checkpointed(resume: r.resume, ranFor: now - r.progressFrom, rate: r.rate)
    }

    /// A start decision: returns the run's generation and when its progress begins (its restart
    /// overhead plus the command's latency).
    public mutating func start(_ job: JobSpec, placement p: Placement, resume: Double, at now: Double, startLatency: Double) -> (generation: Int, progressFrom: Double) {
        let g = generations[job.id, default: 0]
        let overhead = execution.restartSeconds(job) + startLatency
        runs[job.id] = Run(generation: g, key: p.key, nodeID: p.nodeID, startedAt: now, overhead: overhead, resume: resume,
                           rate: execution.rate(p.key), total: job.work)
        return (g, now + overhead)
    }

    /// Progress begins: when the run will finish, or nil when its configuration does not fit (OOM).
    public func finishTime(_ job: String, at now: Double) -> Double? {
        guard let r = runs[job], r.rate > 0 else { return nil }
        return now + max((r.total - r.resume) / r.rate, 0)
    }

    /// The run is over (finished, preempted, failed, lost with its node).
    public mutating func end(_ job: String, at now: Double) {
        if let r = runs.removeValue(forKey: job) { busyGPUSeconds[r.key.gpuModel, default: 0] += (now - r.startedAt) * Double(r.key.gpuCount) }
        generations[job, default: 0] += 1
        crashed.remove(job)
    }

    /// An agent's report after `interval` trace seconds: the throughput it measured, the work done
    /// and the work checkpointed.
    public mutating func measure(_ job: String, at now: Double, interval: Double) -> (throughput: Double, work: Double, checkpointed: Double)? {
        guard var r = runs[job] else { return nil }
        let cv = execution.stepTimeCV(r.key.gpuModel)
        let steps = execution.stepTime(r.key).map { max(1, (interval / $0).rounded()) } ?? 1
        let z = MeasurementNoise.normal(job: job, key: r.key, run: r.resume, index: r.measurements)
        r.measurements += 1
        runs[job] = r
        let measured = r.rate / max(0.05, 1 + cv * z / steps.squareRoot())
        return (measured, work(job, at: now)!, checkpointed(job, at: now)!)
    }

    /// The node crashed: its runs stop making progress (they keep their last checkpoint) and their
    /// events no longer count; the scheduler still believes them running until it is told. Returns
    /// each run's (job, work the scheduler should see, checkpointed).
    public mutating func nodeCrashed(_ node: String, at now: Double) -> [(job: String, work: Double, checkpointed: Double)] {
        var out: [(String, Double, Double)] = []
        for (id, r) in runs where r.nodeID == node && !crashed.contains(id) {
            let c = checkpointed(id, at: now)!
            out.append((id, min(work(id, at: now)!, c), c))
            crashed.insert(id)
            generations[id, default: 0] += 1
        }
        return out.sorted { $0.0 < $1.0 }
    }

    /// Runs on `node` still making progress (not crashed): (job, work, checkpointed) at `now`.
    public func liveRuns(on node: String, at now: Double) -> [(job: String, work: Double, checkpointed: Double)] {
        runs.filter { $0.value.nodeID == node && !crashed.contains($0.key) }.keys.sorted().map { ($0, work($0, at: now)!, checkpointed($0, at: now)!) }
    }
}
