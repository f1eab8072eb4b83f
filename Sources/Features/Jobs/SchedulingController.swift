import Cluster
import Coordinator
import Foundation
import Protocol
import Scheduling

/// Features "jobs" and "inference", coordinator side: one controller because one scheduler decides
/// both (a service's replicas take GPUs back from offline jobs, which are preempted or shrunk). It
/// turns the `Scheduler`'s actions into feature commands, applies the agents' reports, keeps jobs,
/// services, replicas and requests in the store, and answers the jobs and requests API. Inference's
/// half (routing, results, replicas) lives beside that feature, in `Inference/`.
///
/// Called by the coordinator shell on its loop thread (see `CoordinatorFeature`).
public final class SchedulingController: CoordinatorFeature {
    public let features = [JobsHandler.feature, InferenceHandler.feature]
    public let requestBodies = ["submit_jobs", "jobs_request", "submit_requests", "requests_request"]
    /// The knowledge base, jobs, services, replicas and requests.
    public static let storeSchema = [StateStore.knowledgeSchema, StateStore.jobSchema, StateStore.serviceSchema]
    public var storeSchema: [String] { Self.storeSchema }
    public let policyName: String
    /// What replicas hold of each KV block as real bytes (emulation; stated in every reply).
    public let kvBytesScale: Double
    var jobs: JobManager!
    /// The GPU nodes' link to the memory hosts: what planning assumes offloaded weights stream at.
    public var weightLinkBytesPerSecond = 12.5e9

    public init(policy: String, kvBytesScale: Double = SchedulingController.defaultKVBytesScale) {
        self.policyName = policy
        self.kvBytesScale = kvBytesScale
    }

    /// 1/4096: a Llama-2-7B block (16 tokens, 8 MiB) is held as 2 KiB, so a full A100 replica's
    /// cache is 15 MiB and the default testbed stays well within a few GiB.
    public static let defaultKVBytesScale = 1.0 / 4096

    // MARK: Start

    public func start(_ s: CoordinatorServices, restoredNodes: [NodeRecord]) throws {
        let store = s.store
        var kb = try store.loadKnowledge()
        if kb.offline.isEmpty, let dir = s.dataDirectory {
            let (seeded, imported, _) = KnowledgeImporter.seeded(dataDirectory: dir)
            kb = seeded
            try store.saveKnowledge(rows: Array(kb.offline.values), facts: kb.facts)
            s.logger.info("knowledge base seeded", metadata: ["rows": "\(kb.offline.count)", "skipped": "\(imported.skipped.count)", "data": "\(dir)"])
        }
        guard let policy = Policies.named(policyName) else {
            throw UnknownPolicy(name: policyName)
        }
        let t0 = try store.metaValue("trace_t0_nanos")
        jobs = JobManager(policy: policy, kb: kb, timeScale: s.timeScale, t0Wall: t0)
        if weightLinkBytesPerSecond > 0 { jobs.scheduler.weightLinkBytesPerSecond = weightLinkBytesPerSecond }
        for r in restoredNodes where SchedulingController.isGPU(r.info.capabilities) {
            let g = r.info.capabilities.gpu
            jobs.scheduler.state.addNode(NodeSlot(id: r.id, gpuModel: g.model, gpuCount: Int(g.count), alive: r.info.state != .dead))
        }
        let (future, records) = try store.loadJobs()
        jobs.restore(future: future, records: records)
        jobs.restore(services: try store.loadServices(), replicas: try store.loadReplicas(), requests: try store.loadRequests())
        // Start commands still pending, then the last acknowledged one per job, identify current runs.
        for c in s.pendingCommands { if let start = SchedulingController.startJob(in: c) { jobs.noteStartCommand(job: start.jobID, commandID: c.commandID) } }
        for (id, cmd) in try store.lastStartCommands() where jobs.startCommand[id] == nil { jobs.noteStartCommand(job: id, commandID: cmd) }
    }

    static func isGPU(_ c: Capabilities) -> Bool { if case .gpu? = c.kind { return true }; return false }

    /// The start-job message a command carries, if it is one.
    public static func startJob(in c: Command) -> StartJob? {
        guard case .feature(let f)? = c.action, f.feature == JobsHandler.feature,
              let jc = try? JobCommand(serializedBytes: f.body), case .start(let s)? = jc.action else { return nil }
        return s
    }

    // MARK: Membership

    public func nodeRegistered(_ r: Register, newLife: Bool, _ s: CoordinatorServices) {
        guard r.kind == .gpu, SchedulingController.isGPU(r.capabilities) else { return }
        jobs.nodeUp(r.nodeID, gpuModel: r.capabilities.gpu.model, count: Int(r.capabilities.gpu.count), newLife: newLife,
                    now: jobs.traceNow(wall: s.clock.wallNanos()))
    }

    public func nodeDead(_ nodeID: String, _ s: CoordinatorServices) {
        jobs.nodeDead(nodeID, now: jobs.traceNow(wall: s.clock.wallNanos()))
        persistJobs(s)
    }

    // MARK: Reports and acknowledgements

    public func reports(_ reports: [FeatureReport], feature: String, from nodeID: String, clockOffsetNanos: Int64, _ s: CoordinatorServices) -> [String] {
        if feature == InferenceHandler.feature { return requestResults(reports, from: nodeID, clockOffsetNanos: clockOffsetNanos, s) }
        let decoded = reports.compactMap { try? JobReport(serializedBytes: $0.body) }
        if decoded.count < reports.count { s.count("malformed_job_reports") }
        let (settled, stop) = jobs.apply(reports: decoded, from: nodeID, clockOffsetNanos: clockOffsetNanos)
        // Terminal reports are made durable (this turn's commit) before the ack settles them.
        if !settled.isEmpty || !stop.isEmpty { persistJobs(s) }
        for id in stop {
            var jc = JobCommand(); var p = PreemptJob(); p.jobID = id; jc.preempt = p
            do { try s.enqueue(.feature(JobsHandler.feature, node: nodeID, jc)) } catch { s.logger.error("could not persist a stop command: \(error)") }
        }
        return settled
    }

    public func acknowledged(_ command: Command, _ feature: FeatureCommand, ack: CommandAck, _ s: CoordinatorServices) {
        if feature.feature == InferenceHandler.feature { inferenceAcknowledged(command, feature, ack: ack, s); return }
        guard let jc = try? JobCommand(serializedBytes: feature.body) else { return }
        switch jc.action {
        case .preempt(let p)?:
            // The work saved travels typed in the acknowledgement's result.
            if ack.ok, let r = try? PreemptJobResult(serializedBytes: ack.result.body), r.checkpointedWork >= 0 {
                jobs.preemptAcknowledged(job: p.jobID, checkpointedWork: r.checkpointedWork)
            }
        case .start(let start)? where !ack.ok && jobs.startCommand[start.jobID] == ack.commandID:
            s.logLimited("start_refused", "\(command.nodeID) refused to start \(start.jobID): \(ack.detail)")
            jobs.startRefused(job: start.jobID, now: jobs.traceNow(wall: s.clock.wallNanos()))
        default: break
        }
        persistJobs(s)
    }

    // MARK: The loop

    /// A decision round: releases arrived jobs, runs the policy, persists, enqueues commands; then
    /// routes arrived requests to ready replicas.
    public func turn(_ s: CoordinatorServices) -> Bool {
        let decided = schedule(s)
        let retired = retireEmptied(s)
        let routed = routeRequests(s)
        return decided || retired || routed
    }

    /// Retiring replicas that are empty (every request moved or finished), or past their
    /// deadline, stop now; what is left on them waits again.
    private func retireEmptied(_ s: CoordinatorServices) -> Bool {
        guard !jobs.scheduler.retiring.isEmpty else { return false }
        let router = jobs.requests
        let now = jobs.traceNow(wall: s.clock.wallNanos())
        let due = jobs.scheduler.retirable(now: now) { id in router.outstanding(on: id).isEmpty && !router.migrating.values.contains(id) }
        guard !due.isEmpty else { return false }
        do {
            try s.store.batch {
                for id in due {
                    guard let r = jobs.scheduler.state.replicas[id] else { continue }
                    let left = router.replicaGone(id)
                    jobs.scheduler.retired(id)
                    try stopReplica(id, service: r.serviceID, node: r.placement.nodeID, s)
                    if !left.isEmpty { s.logLimited("retire_deadline", "\(id) stopped at its deadline with \(left.count) requests left: they wait again") }
                }
                try s.store.saveRequests(jobs.requests.takeDirty())
            }
        } catch { s.logger.error("could not persist retired replicas: \(error)") }
        return true
    }

    private func schedule(_ s: CoordinatorServices) -> Bool {
        let actions = jobs.tick(wall: s.clock.wallNanos())
        guard !actions.isEmpty else { return false }
        do {
            try s.store.batch {
                try s.store.saveJobs(jobs.takeDirty())
                for a in actions {
                    switch a {
                    case .startJob(let id, let p, let resume):
                        guard let spec = jobs.scheduler.state.jobs[id]?.spec else { continue }
                        var st = StartJob()
                        st.jobID = id; st.model = spec.kind.model; st.task = spec.kind.task; st.batchPerGpu = UInt32(spec.kind.batchPerGPU)
                        st.gpuModel = p.key.gpuModel; st.gpus = p.gpus.map(UInt32.init); st.totalWork = spec.work; st.resumeWork = resume
                        st.unit = spec.unit; st.timeScale = jobs.timeScale
                        var jc = JobCommand(); jc.start = st
                        let sent = try s.enqueue(.feature(JobsHandler.feature, node: p.nodeID, jc))
                        jobs.noteStartCommand(job: id, commandID: sent.commandID)
                        s.event(p.nodeID, "job_start", "\(id) on \(p.gpus.count)x\(p.key.gpuModel) resume \(resume)")
                    case .preemptJob(let id, let node, let reason):
                        var jc = JobCommand(); var pj = PreemptJob(); pj.jobID = id; jc.preempt = pj
                        try s.enqueue(.feature(JobsHandler.feature, node: node, jc))
                        s.event(node, "job_preempt", "\(id): \(reason)")
                    case .startReplica(let id, let service, let p):
                        try startReplica(id, service: service, placement: p, s)
                    case .stopReplica(let id, let service, let node):
                        try stopReplica(id, service: service, node: node, s)
                    case .retireReplica(let id, let service, let node):
                        s.event(node, "replica_retire", "\(id) of \(service): emptied by migration before it stops")
                    }
                }
                try forgetLostReplicas(s)
                try s.store.saveRequests(jobs.requests.takeDirty())
            }
        } catch {
            s.logger.error("could not persist scheduling decisions: \(error)")
        }
        return true
    }

    func persistJobs(_ s: CoordinatorServices) {
        guard !jobs.dirtyJobs.isEmpty else { return }
        do { try s.store.batch { try s.store.saveJobs(jobs.takeDirty()) } } catch { s.logger.error("could not persist jobs: \(error)") }
    }

    /// Jobs as they change; the rates learnt online at each flush (they change with every
    /// progress report: a row per configuration every flush period is enough to survive a restart
    /// and to show in `strato kb show`).
    public func flush(_ s: CoordinatorServices) throws {
        if !jobs.dirtyJobs.isEmpty { try s.store.saveJobs(jobs.takeDirty()) }
        if !jobs.dirtyOnline.isEmpty { try s.store.saveKnowledge(rows: jobs.takeDirtyOnline()) }
    }

    public func nextDueWall() -> Int64? { jobs.nextDueWall() }

    public func traceCounters() -> [String: [String: Double]] {
        var phases: [String: Double] = ["pending": 0, "running": 0, "finished": 0, "future": Double(jobs.futureJobs.count)]
        for j in jobs.scheduler.state.jobs.values { phases[j.phase.rawValue, default: 0] += 1 }
        return ["jobs": phases]
    }

    // MARK: Operator API

    /// Drivers and operators submit; everyone reads.
    public func access(_ envelope: Envelope) -> AccessNeed {
        switch envelope.body {
        case .submitJobs?, .submitRequests?: return .submit
        case .jobsRequest?, .requestsRequest?: return .anyRole
        default: return .operator
        }
    }

    public func handleRequest(_ envelope: Envelope, _ s: CoordinatorServices) -> Envelope.OneOf_Body? {
        switch envelope.body {
        case .submitJobs(let sj)?:
            var (accepted, rejected) = jobs.submit(sj.jobs)
            let svc = jobs.submit(services: sj.services)
            rejected += svc.rejected
            accepted += svc.accepted.count
            let started = accepted > 0 && jobs.startClockIfNeeded(wall: s.clock.wallNanos())
            do { try s.store.batch {
                try s.store.saveFutureJobs(jobs.futureJobs)
                for sv in svc.accepted { try s.store.saveService(sv) }
                if started { try s.store.setMetaValue("trace_t0_nanos", jobs.t0Wall) }
            } } catch { s.logger.error("could not persist submitted jobs: \(error)") }
            if !rejected.isEmpty { s.count("rejected_jobs") }
            for sv in svc.accepted { s.event("coordinator", "service", "\(sv.id): \(sv.model) on \(sv.gpusPerReplica)x\(sv.gpuModel), SLO \(sv.sloSeconds) s") }
            var r = SubmitJobsReply(); r.accepted = UInt32(accepted); r.rejected = rejected
            return .submitJobsReply(r)
        case .jobsRequest?:
            return .jobsReply(jobs.jobsReply(wall: s.clock.wallNanos()))
        case .submitRequests(let sr)?:
            return submitRequests(sr, s)
        case .requestsRequest(let rr)?:
            var reply = jobs.requestsReply(wall: s.clock.wallNanos(), includeRequests: rr.includeRequests,
                                           replicaStarts: { Int(s.counter("replica_starts/" + $0)) })
            reply.kvBytesScale = kvBytesScale
            if !reply.services.isEmpty {
                reply.notes.append(kvBytesScale > 0 ? String(format: "replicas hold their KV blocks as real bytes at kv_bytes_scale %g (1/%.0f of the real size)", kvBytesScale, 1 / kvBytesScale)
                                                    : "replicas hold no KV bytes (kv_bytes_scale 0)")
            }
            return .requestsReply(reply)
        default:
            return nil
        }
    }
}

/// The coordinator was asked for a policy that does not exist.
public struct UnknownPolicy: Error, CustomStringConvertible {
    public let name: String
    public var known = Policies.names
    public init(name: String, known: [String] = Policies.names) { self.name = name; self.known = known }
    public var description: String { "unknown policy '\(name)' (known: \(known.joined(separator: ", ")))" }
}
