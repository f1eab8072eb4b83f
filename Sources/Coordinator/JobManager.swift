import Foundation
import Protocol
import Scheduling

/// The coordinator's side of offline-job scheduling: the same `Scheduler` the twin runs, driven by
/// real agents. Trace time = (wall − start) × time scale; jobs wait until their arrival; every
/// job change is written to the store before the coordinator acts on it, so a coordinator crash
/// loses no job, and a dead node's jobs resume from their last checkpoint elsewhere.
final class JobManager {
    var scheduler: Scheduler
    let timeScale: Double
    let execution: ExecutionModel
    /// Wall time of trace second 0: set by the first submission (0 until then), persisted.
    private(set) var t0Wall: Int64
    /// Submitted jobs whose arrival is still in the future.
    private var future: [JobSpec] = []
    /// Start command id per running job: reports from an older start are ignored.
    private(set) var startCommand: [String: UInt64] = [:]
    private(set) var dirtyJobs = Set<String>()
    /// Failures the agents reported (the last 50), shown in `strato jobs`.
    private(set) var notes: [String] = [] { didSet { if notes.count > 50 { notes.removeFirst(notes.count - 50) } } }
    private var needsDecision = true
    /// Zombie jobs already told to stop (node id + job id).
    private var stopped = Set<String>()

    init(policy: SchedulingPolicy, kb: KnowledgeBase, timeScale: Double, t0Wall: Int64) {
        self.scheduler = Scheduler(policy: policy, kb: kb)
        self.timeScale = timeScale
        self.execution = ExecutionModel(kb: kb)
        self.t0Wall = t0Wall
    }

    func traceNow(wall: Int64) -> Double { t0Wall == 0 ? 0 : Double(wall - t0Wall) / 1e9 * timeScale }

    /// Starts the trace clock at the first submission; returns true when it just started.
    func startClockIfNeeded(wall: Int64) -> Bool {
        guard t0Wall == 0 else { return false }
        t0Wall = wall
        return true
    }
    func wall(trace: Double) -> Int64 { t0Wall + Int64(trace / timeScale * 1e9) }

    // MARK: nodes

    func nodeUp(_ id: String, gpuModel: String, count: Int, newLife: Bool, now: Double) {
        if let n = scheduler.state.nodes[id] {
            if newLife && n.alive { markDirty(scheduler.state.nodeFailed(id, at: now).jobs) }
            scheduler.state.nodeRecovered(id)
        } else {
            scheduler.state.addNode(NodeSlot(id: id, gpuModel: gpuModel, gpuCount: count))
        }
        needsDecision = true
    }

    func nodeDead(_ id: String, now: Double) {
        let lost = scheduler.state.nodeFailed(id, at: now)
        markDirty(lost.jobs)
        for j in lost.jobs { startCommand[j] = nil }
        needsDecision = true
    }

    private func markDirty(_ ids: [String]) { for i in ids { dirtyJobs.insert(i) } }

    // MARK: jobs

    /// Validates and accepts submissions; returns (accepted, rejected "id: reason").
    func submit(_ subs: [JobSubmission]) -> (Int, [String]) {
        var accepted = 0, rejected: [String] = []
        for s in subs {
            let kind = JobKind(model: s.model, task: s.task, batchPerGPU: Int(s.batchPerGpu))
            if s.jobID.isEmpty { rejected.append("(no id): job_id is empty"); continue }
            if scheduler.state.jobs[s.jobID] != nil || future.contains(where: { $0.id == s.jobID }) { rejected.append("\(s.jobID): a job with this id exists"); continue }
            let rows = scheduler.kb.offlineRows(for: kind)
            if rows.isEmpty { rejected.append("\(s.jobID): unknown model/task/batch '\(kind)' (not in the knowledge base; see `strato kb query`)"); continue }
            if !rows.contains(where: { $0.fits }) { rejected.append("\(s.jobID): \(kind) fits no configuration"); continue }
            if !s.requestedGpuModel.isEmpty && GPUCatalog.model(named: s.requestedGpuModel) == nil { rejected.append("\(s.jobID): unknown GPU model '\(s.requestedGpuModel)'"); continue }
            guard s.work > 0, s.work.isFinite, s.requestedGpus >= 1, s.arrival >= 0 else { rejected.append("\(s.jobID): work must be > 0, requested_gpus ≥ 1, arrival ≥ 0"); continue }
            let spec = JobSpec(id: s.jobID, kind: kind, arrival: s.arrival, requestedGPUModel: s.requestedGpuModel.isEmpty ? nil : GPUCatalog.model(named: s.requestedGpuModel)!.name,
                               requestedGPUs: Int(s.requestedGpus), work: s.work, unit: s.unit.isEmpty ? rows[0].unit : s.unit, priority: Int(s.priority), elastic: s.elastic)
            future.append(spec)
            accepted += 1
        }
        future.sort { ($0.arrival, $0.id) < ($1.arrival, $1.id) }
        return (accepted, rejected)
    }

    var futureJobs: [JobSpec] { future }

    func restore(future specs: [JobSpec], records: [JobRecord]) {
        future = specs.sorted { ($0.arrival, $0.id) < ($1.arrival, $1.id) }
        for r in records { scheduler.state.restore(r) }
    }

    /// Releases arrived jobs and runs a decision round when something changed.
    func tick(wall: Int64, currentWork: (String) -> Double?) -> [SchedulerAction] {
        let now = traceNow(wall: wall)
        var released = false
        while let f = future.first, f.arrival <= now {
            future.removeFirst()
            scheduler.state.submit(f)
            dirtyJobs.insert(f.id)
            released = true
        }
        guard released || needsDecision else { return [] }
        needsDecision = false
        let actions = scheduler.step(now: now, currentWork: currentWork)
        for a in actions {
            switch a {
            case .startJob(let id, _, _), .preemptJob(let id, _, _): dirtyJobs.insert(id)
            default: break
            }
        }
        return actions
    }

    func noteStartCommand(job: String, commandID: UInt64) { startCommand[job] = commandID }

    /// Applies a node's job reports; returns the terminal ones now settled (to acknowledge) and
    /// zombie jobs to stop on that node.
    func apply(reports: [JobReport], from node: String, clockOffsetNanos: Int64) -> (settled: [String], stop: [String]) {
        var settled: [String] = [], stop: [String] = []
        for r in reports {
            let j = scheduler.state.jobs[r.jobID]
            let current = j?.phase == .running && j?.placement?.nodeID == node && startCommand[r.jobID] == r.startCommandID
            let terminal = r.state == .jobFinished || r.state == .jobFailedOom || r.state == .jobPreempted || r.state == .jobFailed
            if !current {
                if terminal { settled.append(r.jobID) }   // stale: nothing to keep, stop repeating
                else if !stopped.contains(node + "/" + r.jobID) { stopped.insert(node + "/" + r.jobID); stop.append(r.jobID) }
                continue
            }
            switch r.state {
            case .jobRunning, .jobLoading:
                scheduler.state.progress(job: r.jobID, workDone: r.workDone, checkpointed: r.checkpointedWork)
                if r.state == .jobRunning, r.throughput > 0, let key = j?.placement?.key {
                    scheduler.kb.recordOnline(key, throughput: r.throughput, unit: j!.spec.unit, stepTime: r.meanStepSeconds > 0 ? r.meanStepSeconds : nil)
                }
                dirtyJobs.insert(r.jobID)
            case .jobFinished:
                let at = traceNow(wall: r.endedAtUnixNanos + clockOffsetNanos)
                scheduler.state.progress(job: r.jobID, workDone: r.workDone, checkpointed: r.workDone)
                scheduler.state.finish(job: r.jobID, at: at)
                startCommand[r.jobID] = nil
                dirtyJobs.insert(r.jobID); settled.append(r.jobID); needsDecision = true
            case .jobFailed:
                // The job's process failed: it resumes from its last checkpoint (a failed start
                // counts towards the limit after which the job is given up, with the reason).
                scheduler.state.progress(job: r.jobID, workDone: r.checkpointedWork, checkpointed: r.checkpointedWork)
                scheduler.state.failedStart(job: r.jobID, at: traceNow(wall: r.endedAtUnixNanos + clockOffsetNanos))
                notes.append("\(r.jobID) on \(node): \(r.detail)")
                startCommand[r.jobID] = nil
                dirtyJobs.insert(r.jobID); settled.append(r.jobID); needsDecision = true
            case .jobFailedOom:
                scheduler.state.failedStart(job: r.jobID, at: traceNow(wall: r.endedAtUnixNanos + clockOffsetNanos))
                startCommand[r.jobID] = nil
                dirtyJobs.insert(r.jobID); settled.append(r.jobID); needsDecision = true
            default:
                settled.append(r.jobID)
            }
        }
        return (settled, stop)
    }

    /// A start command was refused by the agent: queue the job again.
    func startRefused(job: String, now: Double) {
        scheduler.state.preempt(job: job, workDone: nil, at: now)
        startCommand[job] = nil
        dirtyJobs.insert(job); needsDecision = true
    }

    func preemptAcknowledged(job: String, detail: String) {
        if let r = detail.range(of: "work="), let w = Double(detail[r.upperBound...].prefix { !$0.isWhitespace }), w >= 0 {
            scheduler.state.preemptedWork(job: job, work: w)
            dirtyJobs.insert(job)
        }
    }

    func takeDirty() -> [JobRecord] {
        defer { dirtyJobs.removeAll() }
        return dirtyJobs.sorted().compactMap { scheduler.state.jobs[$0] }
    }

    func jobsReply(wall: Int64) -> JobsReply {
        var r = JobsReply()
        r.policy = scheduler.policy.name
        r.timeScale = timeScale
        r.traceNow = traceNow(wall: wall)
        var list: [JobStatus] = []
        func status(_ j: JobRecord) -> JobStatus {
            var s = JobStatus()
            s.jobID = j.spec.id
            s.kind = j.spec.kind.description
            s.phase = j.failed ? "failed" : j.phase.rawValue
            s.nodeID = j.placement?.nodeID ?? ""
            s.gpuModel = (j.placement?.key ?? j.lastKey)?.gpuModel ?? ""
            s.gpus = UInt32((j.placement?.key ?? j.lastKey)?.gpuCount ?? 0)
            s.work = j.spec.work
            s.workDone = j.workDone
            s.arrival = j.spec.arrival
            s.firstStart = j.firstStart ?? -1
            s.finish = j.phase == .finished && !j.failed ? (j.finishedAt ?? -1) : -1
            s.queueing = j.queueingDelay
            s.preemptions = UInt32(j.preemptions)
            s.restarts = UInt32(j.restarts)
            s.failedStarts = UInt32(j.failedStarts)
            return s
        }
        for j in scheduler.state.jobs.values { list.append(status(j)) }
        for f in future { list.append(status(JobRecord(spec: f))) }
        r.jobs = list.sorted { $0.jobID < $1.jobID }
        r.unfinished = UInt32(scheduler.state.unfinishedCount + future.count)
        r.notes = ["GPU execution is emulated from published measurements (VectorLM, Gavel, Vidur) unless a node runs the process backend"]
            + scheduler.rejectedDecisions.suffix(20) + notes
        return r
    }
}
