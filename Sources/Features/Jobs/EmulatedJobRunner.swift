import Cluster
import Foundation
import Protocol
import Scheduling

/// Runs offline jobs by emulation on a GPU node: progress, step times (with the variance Vidur
/// measured), memory fit and restart cost all come from `ExecutionModel` over the knowledge base's
/// measured and estimated rows. Reports say `emulated`. Time is trace time: wall seconds × the
/// start command's time scale.
public final class EmulatedJobRunner {
    public let execution: ExecutionModel
    private var rng: SplitMix64

    struct Job {
        var start: StartJob
        var commandID: UInt64
        var startedWall: Int64
        var overhead: Double      // trace seconds before progress begins
        var rate: Double          // work per trace second (0: does not fit)
        var lastReportWall: Int64
        var lastReportWork: Double
        var key: ConfigKey
        var measurements = 0
        /// Trace time of this run: second 0 is its start on this agent, at the command's scale.
        var clock: TraceClock { TraceClock(zeroWall: startedWall, timeScale: start.timeScale) }
    }
    private var jobs: [String: Job] = [:]
    /// Terminal reports repeated until the coordinator settles them.
    private var terminal: [String: JobReport] = [:]

    /// The node's tracer (`FeatureHandler.attach`); a recorder of its own, off, until then.
    public var tracer = Tracer()

    public init(execution: ExecutionModel, seed: UInt64) {
        self.execution = execution
        self.rng = SplitMix64(seed: seed)
    }

    public var runningIDs: [String] { jobs.keys.sorted() }

    public func busyGPUs() -> Set<UInt32> { Set(jobs.values.flatMap(\.start.gpus)) }

    public func start(_ s: StartJob, commandID: UInt64, wallNanos: Int64) -> (ok: Bool, detail: String) {
        guard s.timeScale > 0, s.totalWork > 0 else { return (false, "start_job needs time_scale > 0 and total_work > 0") }
        let key = ConfigKey(model: s.model, task: s.task, gpuModel: s.gpuModel, gpuCount: s.gpus.count, batchPerGPU: Int(s.batchPerGpu))
        let spec = JobSpec(id: s.jobID, kind: key.job, arrival: 0, requestedGPUModel: nil, requestedGPUs: s.gpus.count, work: s.totalWork, unit: s.unit)
        terminal[s.jobID] = nil
        jobs[s.jobID] = Job(start: s, commandID: commandID, startedWall: wallNanos, overhead: execution.restartSeconds(spec),
                            rate: execution.rate(key), lastReportWall: wallNanos, lastReportWork: s.resumeWork, key: key)
        tracer.instant("start \(s.jobID)", category: "job", track: "jobs",
                              args: ["job": s.jobID, "gpus": s.gpus.map(String.init).joined(separator: ","), "gpu_model": s.gpuModel,
                                     "resume_work": "\(s.resumeWork)", "emulated": "true"])
        return (true, "started \(s.jobID) on GPUs \(s.gpus.map(String.init).joined(separator: ",")) (emulated)")
    }

    /// Stops a job at a checkpoint taken now, saying the work saved.
    public func preempt(_ id: String, wallNanos: Int64) -> PreemptOutcome {
        guard let j = jobs.removeValue(forKey: id) else { return PreemptOutcome(checkpointedWork: nil, detail: "\(id) is not running here") }
        let w = work(j, wallNanos)
        traceRun(j, end: wallNanos, outcome: "preempted", work: w)
        return PreemptOutcome(checkpointedWork: w, detail: "stopped \(id) at a checkpoint taken now (\(w))")
    }

    private func traceSeconds(_ j: Job, _ wall: Int64) -> Double { j.clock.trace(wall: wall) }

    private func work(_ j: Job, _ wall: Int64) -> Double {
        let ran = traceSeconds(j, wall) - j.overhead
        return min(j.start.resumeWork + max(0, ran) * j.rate, j.start.totalWork)
    }

    public func reports(wallNanos now: Int64) -> [JobReport] {
        var out: [JobReport] = []
        for id in jobs.keys.sorted() {
            var j = jobs[id]!
            var r = JobReport()
            r.jobID = id
            r.emulated = true
            r.startCommandID = j.commandID
            let t = traceSeconds(j, now)
            if t < j.overhead {
                r.state = .jobLoading
                r.workDone = j.start.resumeWork
                r.checkpointedWork = j.start.resumeWork
                out.append(r)
                continue
            }
            if j.rate <= 0 {
                r.state = .jobFailedOom
                r.workDone = j.start.resumeWork
                r.checkpointedWork = j.start.resumeWork
                r.endedAtUnixNanos = j.clock.wall(trace: j.overhead)
                traceRun(j, end: r.endedAtUnixNanos, outcome: "failed_oom", work: r.workDone)
                terminal[id] = r
                jobs[id] = nil
                continue
            }
            let w = work(j, now)
            let ran = t - j.overhead
            r.checkpointedWork = execution.checkpointed(resume: j.start.resumeWork, ranFor: ran, rate: j.rate)
            r.workDone = w
            r.gpuUtilization = 1
            if w >= j.start.totalWork {
                r.state = .jobFinished
                r.checkpointedWork = w
                let finishTrace = j.overhead + (j.start.totalWork - j.start.resumeWork) / j.rate
                r.endedAtUnixNanos = j.clock.wall(trace: finishTrace)
                traceRun(j, end: r.endedAtUnixNanos, outcome: "finished", work: w)
                terminal[id] = r
                jobs[id] = nil
                continue
            }
            // Measured rate since the last report: nominal rate with step-time noise.
            let dtTrace = j.clock.traceSeconds(fromWall: j.lastReportWall, toWall: now)
            if dtTrace > 0, let step = execution.stepTime(j.key) {
                let steps = max(1, (dtTrace / step).rounded())
                let cv = execution.stepTimeCV(j.key.gpuModel)
                let z = MeasurementNoise.normal(job: id, key: j.key, run: j.start.resumeWork, index: j.measurements)
                j.measurements += 1
                let measuredStep = step * max(0.05, 1 + cv * z / steps.squareRoot())
                r.meanStepSeconds = measuredStep
                r.steps = UInt64(steps)
                r.throughput = execution.workPerStep(j.key) / measuredStep
            }
            r.state = .jobRunning
            j.lastReportWall = now
            j.lastReportWork = w
            jobs[id] = j
            out.append(r)
        }
        return out + terminal.keys.sorted().map { terminal[$0]! }
    }

    /// One span per run of a job on this node, from its start command to how it ended.
    private func traceRun(_ j: Job, end: Int64, outcome: String, work: Double) {
        tracer.span("run \(j.start.jobID)", category: "job", track: "jobs", start: j.startedWall, end: end,
                           args: ["job": j.start.jobID, "outcome": outcome, "work": "\(work)", "total_work": "\(j.start.totalWork)",
                                  "gpu_model": j.start.gpuModel, "gpus": "\(j.start.gpus.count)", "emulated": "true"])
    }

    /// The next moment a job finishes loading or finishes its work (agent wall clock).
    public func nextReportDue(wallNanos: Int64) -> Int64? {
        var due: Int64?
        for j in jobs.values where j.start.timeScale > 0 {
            var traceAt = j.overhead
            if wallNanos >= j.clock.wall(trace: j.overhead), j.rate > 0 {
                traceAt = j.overhead + (j.start.totalWork - j.start.resumeWork) / j.rate
            }
            let at = j.clock.wall(trace: traceAt)
            if at >= wallNanos { due = min(due ?? at, at) }
        }
        return due
    }

    public func settle(_ ids: [String]) { for id in ids { terminal[id] = nil } }
}
