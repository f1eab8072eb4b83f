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
    /// Configurations whose online (measured on this testbed) rate changed since they were stored.
    private(set) var dirtyOnline = Set<ConfigKey>()
    /// Failures the agents reported (the last 50), shown in `strato jobs`.
    private(set) var notes: [String] = [] { didSet { if notes.count > 50 { notes.removeFirst(notes.count - 50) } } }
    private var needsDecision = true
    /// Online services accepted, and their inference requests.
    private(set) var services: [String: ServiceSpec] = [:]
    let requests = RequestRouter()
    /// Replicas lost with their node since the server last looked (rows to delete, commands to drop).
    private(set) var lostReplicas: [String] = []
    /// Trace time of the last decision round (a rate change after it calls for another).
    private var lastDecision = -1.0
    /// Zombie jobs already told to stop (node id + job id).
    private var stopped = Set<String>()

    init(policy: SchedulingPolicy, kb: KnowledgeBase, timeScale: Double, t0Wall: Int64) {
        self.scheduler = Scheduler(policy: policy, kb: kb)
        self.timeScale = timeScale
        self.execution = ExecutionModel(kb: kb)
        self.t0Wall = t0Wall
    }

    var traceClock: TraceClock { TraceClock(zeroWall: t0Wall, timeScale: timeScale) }
    func traceNow(wall: Int64) -> Double { t0Wall == 0 ? 0 : traceClock.trace(wall: wall) }

    /// Starts the trace clock at the first submission; returns true when it just started.
    func startClockIfNeeded(wall: Int64) -> Bool {
        guard t0Wall == 0 else { return false }
        t0Wall = wall
        return true
    }
    func wall(trace: Double) -> Int64 { traceClock.wall(trace: trace) }

    // MARK: nodes

    func nodeUp(_ id: String, gpuModel: String, count: Int, newLife: Bool, now: Double) {
        if let n = scheduler.state.nodes[id] {
            if newLife && n.alive { lost(scheduler.state.nodeFailed(id, at: now)) }
            scheduler.state.nodeRecovered(id)
        } else {
            scheduler.state.addNode(NodeSlot(id: id, gpuModel: gpuModel, gpuCount: count))
        }
        needsDecision = true
    }

    func nodeDead(_ id: String, now: Double) {
        let gone = scheduler.state.nodeFailed(id, at: now)
        lost(gone)
        for j in gone.jobs { startCommand[j] = nil }
        needsDecision = true
    }

    private func lost(_ gone: (jobs: [String], replicas: [String])) {
        markDirty(gone.jobs)
        for r in gone.replicas { requests.replicaGone(r) }
        lostReplicas += gone.replicas
    }

    func takeLostReplicas() -> [String] { defer { lostReplicas.removeAll() }; return lostReplicas }

    /// The online rows changed since the last call, to store (a restart keeps what was learnt).
    func takeDirtyOnline() -> [PerfRow] {
        defer { dirtyOnline.removeAll() }
        return dirtyOnline.sorted { "\($0)" < "\($1)" }.compactMap { scheduler.kb.online[$0] }
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

    /// Wall time (coordinator clock) of the next job arrival or service rate change, or nil.
    func nextDueWall() -> Int64? {
        guard t0Wall != 0 else { return nil }
        let next = [future.first?.arrival, scheduler.nextRateChange(after: lastDecision)].compactMap { $0 }.min()
        return next.map { wall(trace: $0) }
    }

    // MARK: services

    /// Validates and accepts services; a service whose model and GPU have no inference profile,
    /// or that cannot meet its SLO, is rejected with the scheduler's reason.
    func submit(services subs: [ServiceSubmission]) -> (accepted: [ServiceSpec], rejected: [String]) {
        var accepted: [ServiceSpec] = [], rejected: [String] = []
        for s in subs {
            if s.serviceID.isEmpty { rejected.append("(no id): service_id is empty"); continue }
            if services[s.serviceID] != nil { rejected.append("\(s.serviceID): a service with this id exists"); continue }
            guard ModelCatalog.model(named: s.model) != nil else { rejected.append("\(s.serviceID): unknown model '\(s.model)'"); continue }
            guard let gpu = GPUCatalog.model(named: s.gpuModel) else { rejected.append("\(s.serviceID): unknown GPU model '\(s.gpuModel)'"); continue }
            guard !s.rateCurve.isEmpty, s.rateCurve.allSatisfy({ $0.time >= 0 && $0.rps >= 0 && $0.rps.isFinite }),
                  s.sloSeconds > 0, s.gpusPerReplica >= 1, s.meanDecodeTokens >= 1 else {
                rejected.append("\(s.serviceID): needs a rate curve (time ≥ 0, rps ≥ 0), slo_seconds > 0, gpus_per_replica ≥ 1, mean_decode_tokens ≥ 1"); continue
            }
            var spec = ServiceSpec(id: s.serviceID, model: ModelCatalog.model(named: s.model)!.name, gpuModel: gpu.name, gpusPerReplica: Int(s.gpusPerReplica),
                                   rateCurve: s.rateCurve.map { RatePoint(time: $0.time, rps: $0.rps) }.sorted { $0.time < $1.time },
                                   meanPrefillTokens: s.meanPrefillTokens, meanDecodeTokens: s.meanDecodeTokens, sloSeconds: s.sloSeconds,
                                   minReplicas: Int(s.minReplicas))
            spec.maxNumSeqs = Int(s.maxNumSeqs)
            spec.offloadWeights = s.offloadWeights
            if s.gpuMemoryUtilization != 0 {
                guard s.gpuMemoryUtilization > 0 && s.gpuMemoryUtilization <= 1 else {
                    rejected.append("\(s.serviceID): gpu_memory_utilization \(s.gpuMemoryUtilization) must be > 0 and ≤ 1"); continue
                }
                spec.gpuMemoryUtilization = s.gpuMemoryUtilization
            }
            let skipped = scheduler.skippedServices.count
            scheduler.addService(spec)
            if scheduler.skippedServices.count > skipped { rejected.append("\(s.serviceID): \(scheduler.skippedServices.last!.reason)"); continue }
            services[spec.id] = spec
            accepted.append(spec)
        }
        if !accepted.isEmpty { needsDecision = true }
        return (accepted, rejected)
    }

    func restore(services specs: [ServiceSpec], replicas: [(ReplicaRecord, ready: Bool)], requests records: [RequestRouter.Record]) {
        for s in specs { scheduler.addService(s); services[s.id] = s }
        for (r, ready) in replicas where scheduler.restoreReplica(r) && ready {
            requests.replicaReady(r.id, service: r.serviceID, node: r.placement.nodeID, batch: scheduler.batchPerReplica[r.serviceID] ?? 1)
        }
        for r in records { requests.restore(r) }
    }

    /// The agent acknowledged a replica's start: requests may go to it.
    func replicaStarted(_ id: String) {
        guard let r = scheduler.state.replicas[id] else { return }
        requests.replicaReady(id, service: r.serviceID, node: r.placement.nodeID, batch: scheduler.batchPerReplica[r.serviceID] ?? 1)
    }

    /// A replica is gone outside the scheduler's own decisions (its agent refused to start it, or
    /// no longer serves it): its GPUs are free, its requests wait again, another may start.
    func replicaFailed(_ id: String) {
        requests.replicaGone(id)
        scheduler.state.stopReplica(id)
        lostReplicas.append(id)
        needsDecision = true
    }

    func restore(future specs: [JobSpec], records: [JobRecord]) {
        future = specs.sorted { ($0.arrival, $0.id) < ($1.arrival, $1.id) }
        for r in records { scheduler.state.restore(r) }
    }

    /// Releases arrived jobs and runs a decision round when something changed.
    /// A running job's work is the last the agent reported (read from a copy: the scheduler asks
    /// while it is mid-step, and reading it in place would overlap that access).
    func tick(wall: Int64) -> [SchedulerAction] {
        let now = traceNow(wall: wall)
        var released = false
        while let f = future.first, f.arrival <= now {
            future.removeFirst()
            scheduler.state.submit(f)
            dirtyJobs.insert(f.id)
            released = true
        }
        let rateChanged = scheduler.nextRateChange(after: lastDecision).map { $0 <= now } ?? false
        // A backlog (after a lost replica, or a burst) calls for replicas beyond the rate's.
        var scale = false
        if !services.isEmpty {
            scheduler.backlog = requests.scalingBacklog(now: now) { [services] in services[$0]?.sloSeconds ?? 20 }
            scale = scheduler.services.contains { scheduler.desiredReplicas($0, at: now) > scheduler.replicas(of: $0.id).count }
        }
        guard released || needsDecision || rateChanged || scale else { return [] }
        needsDecision = false
        lastDecision = now
        let reported = scheduler.state.jobs.mapValues(\.workDone)
        let actions = scheduler.step(now: now, currentWork: { reported[$0] })
        for a in actions {
            switch a {
            case .startJob(let id, _, _), .preemptJob(let id, _, _): dirtyJobs.insert(id)
            case .stopReplica(let id, _, _): requests.replicaGone(id)
            case .retireReplica(let id, _, _): requests.setClosed(id, true)
            case .startReplica: break
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
                    dirtyOnline.insert(key)
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

    func preemptAcknowledged(job: String, checkpointedWork: Double) {
        scheduler.state.preemptedWork(job: job, work: checkpointedWork)
        dirtyJobs.insert(job)
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

    func requestsReply(wall: Int64, includeRequests: Bool, replicaStarts: (String) -> Int) -> RequestsReply {
        var r = RequestsReply()
        r.timeScale = timeScale
        let now = traceNow(wall: wall)
        r.traceNow = now
        let tally = requests.tally()
        for s in scheduler.services {
            var st = ServiceStatus()
            st.serviceID = s.id; st.model = s.model; st.gpuModel = s.gpuModel; st.sloSeconds = s.sloSeconds
            st.capacityRps = scheduler.capacityPerReplica[s.id] ?? 0
            st.batch = UInt32(scheduler.batchPerReplica[s.id] ?? 0)
            let placed = scheduler.replicas(of: s.id)
            st.replicas = UInt32(placed.count)
            st.ready = UInt32(placed.filter { requests.ready[$0.id] != nil }.count)
            st.desired = UInt32(scheduler.desiredReplicas(s, at: now))
            let t = tally[s.id] ?? RequestRouter.Tally()
            st.submitted = UInt64(t.submitted); st.completed = UInt64(t.completed); st.withinSlo = UInt64(t.withinSLO)
            st.outstanding = UInt64(t.submitted - t.completed)
            st.redispatched = UInt64(t.resent)
            st.replicaStarts = UInt32(replicaStarts(s.id))
            let sorted = t.latencies.sorted()
            if !sorted.isEmpty {
                st.latencyMean = sorted.reduce(0, +) / Double(sorted.count)
                st.latencyP50 = percentile(sorted, 50)
                st.latencyP99 = percentile(sorted, 99)
            }
            let ttfts = t.ttfts.sorted(), tbts = t.tbts.sorted()
            if !ttfts.isEmpty { st.ttftP50 = percentile(ttfts, 50); st.ttftP99 = percentile(ttfts, 99) }
            if !tbts.isEmpty { st.tbtP50 = percentile(tbts, 50); st.tbtP99 = percentile(tbts, 99) }
            st.preemptions = UInt64(t.preemptions)
            r.services.append(st)
        }
        r.notes = scheduler.skippedServices.map { "service \($0.id) skipped: \($0.reason)" }
        if !scheduler.services.isEmpty { r.notes.append("inference replicas are emulated: an iteration-level engine (continuous batching, paged KV blocks, chunked prefill) timed by Vidur's operator profiles") }
        if includeRequests {
            r.requests = requests.records.values.sorted { ($0.request.arrival, $0.request.id) < ($1.request.arrival, $1.request.id) }.map { x in
                var m = RequestRecord()
                m.requestID = x.request.id; m.serviceID = x.request.serviceID; m.arrival = x.request.arrival
                m.prefillTokens = UInt32(x.request.prefill); m.decodeTokens = UInt32(x.request.decode)
                m.finished = x.finished ?? -1; m.latency = x.latency ?? -1
                m.replicaID = x.replica ?? ""; m.nodeID = x.node ?? ""; m.attempts = UInt32(x.attempts)
                m.queuedSeconds = x.queued; m.serviceSeconds = x.service
                m.ttft = x.ttft ?? -1; m.meanTbtSeconds = x.meanTBT; m.maxTbtSeconds = x.maxTBT; m.preemptions = UInt32(x.preemptions)
                m.highPriority = x.request.highPriority; m.migrations = UInt32(x.migrations)
                return m
            }
        }
        return r
    }
}
