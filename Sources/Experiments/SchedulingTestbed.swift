import Cluster
import Foundation
import Protocol
import Scheduling

extension JobSpec {
    public var submission: JobSubmission {
        var s = JobSubmission()
        s.jobID = id; s.model = kind.model; s.task = kind.task; s.batchPerGpu = UInt32(kind.batchPerGPU)
        s.arrival = arrival; s.requestedGpuModel = requestedGPUModel ?? ""; s.requestedGpus = UInt32(requestedGPUs)
        s.work = work; s.unit = unit; s.priority = Int32(priority); s.elastic = elastic
        return s
    }
}

extension ServiceSpec {
    public var submission: ServiceSubmission {
        var s = ServiceSubmission()
        s.serviceID = id; s.model = model; s.gpuModel = gpuModel; s.gpusPerReplica = UInt32(gpusPerReplica)
        s.rateCurve = rateCurve.map { p in var m = RateCurvePoint(); m.time = p.time; m.rps = p.rps; return m }
        s.meanPrefillTokens = meanPrefillTokens; s.meanDecodeTokens = meanDecodeTokens
        s.sloSeconds = sloSeconds; s.minReplicas = UInt32(minReplicas); s.maxNumSeqs = UInt32(maxNumSeqs)
        s.offloadWeights = offloadWeights
        s.gpuMemoryUtilization = gpuMemoryUtilization
        return s
    }
}

/// `requests.csv`: one row per inference request as the coordinator recorded it.
public enum RequestsTable {
    static let header = "request_id,service_id,arrival_s,prefill_tokens,decode_tokens,finished_s,latency_s,queued_s,service_s,replica,node,attempts,ttft_s,mean_tbt_s,max_tbt_s,preemptions,high_priority\n"

    /// `highPriority`: the ids of the requests drawn high priority (the driver's, as it sent them).
    public static func write(_ r: RequestsReply, highPriority: Set<String> = [], to path: String) throws {
        var out = header
        for q in r.requests {
            out += "\(q.requestID),\(q.serviceID),\(q.arrival),\(q.prefillTokens),\(q.decodeTokens),\(q.finished),\(q.latency),\(q.queuedSeconds),\(q.serviceSeconds),\(q.replicaID),\(q.nodeID),\(q.attempts),\(q.ttft),\(q.meanTbtSeconds),\(q.maxTbtSeconds),\(q.preemptions),\(highPriority.contains(q.requestID) ? "yes" : "no")\n"
        }
        try out.write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// The twin's requests, in the testbed's columns (-1 where a request never finished or never
    /// had a first token), so the same tools read both.
    public static func csv(_ rs: [RequestOutcome]) -> String {
        var out = header
        for q in rs {
            out += "\(q.id),\(q.serviceID),\(q.arrival),\(q.prefill),\(q.decode),\(q.finished ?? -1),\(q.latency ?? -1),\(q.queued),\(q.serviceSeconds),\(q.replica ?? ""),\(q.node ?? ""),\(q.attempts),\(q.ttft ?? -1),\(q.meanTBT),\(q.maxTBT),\(q.preemptions),\(q.highPriority ? "yes" : "no")\n"
        }
        return out
    }
}

/// Replays a workload on a running testbed: submits every job (the coordinator releases each at
/// its arrival in trace time), optionally kills nodes on the way, and waits until every job is
/// finished (or failed), showing progress. Returns the run measured from the coordinator.
public struct SchedulingTestbedRun {
    public var client: OperatorClient
    public var workload: Workload
    public var timeoutSeconds: Double = 600
    /// (trace seconds, action) — e.g. kill a node's process at 30 % of the trace. The action gets
    /// the trace time at which it really ran (the run polls, so a little after the one asked for).
    public var faults: [(Double, String, (Double) -> Void)] = []

    /// Online services and their requests, sent at their arrival times while the jobs run.
    public var services: [ServiceSpec] = []
    public var requests: [ServiceRequest] = []

    public init(client: OperatorClient, workload: Workload) { self.client = client; self.workload = workload }

    /// Returns the coordinator's final job list, its request accounting (with services) and notes.
    public func run(progress: (String) -> Void = { _ in }) throws -> (JobsReply, RequestsReply?, [String]) {
        var log: [String] = []
        for chunk in stride(from: 0, to: workload.jobs.count, by: 500) {
            let part = workload.jobs[chunk..<min(chunk + 500, workload.jobs.count)].map(\.submission)
            let r = try client.submit(Array(part), services: chunk == 0 ? services.map(\.submission) : [])
            if !r.rejected.isEmpty { log += r.rejected.map { "rejected \($0)" } }
        }
        let driver = requests.isEmpty ? nil : try RequestDriver.start(requests, via: client)
        defer { driver?.stop() }
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        var pendingFaults = faults.sorted { $0.0 < $1.0 }
        var last: JobsReply?
        var lastPrint = Date.distantPast
        while Date() < deadline {
            let r = try client.jobs()
            let replyAt = Date()
            last = r
            while let f = pendingFaults.first, r.traceNow >= f.0 {
                pendingFaults.removeFirst()
                // The trace clock has moved on since the reply: estimate it now from the time scale.
                f.2(r.traceNow + Date().timeIntervalSince(replyAt) * r.timeScale)
                log.append(String(format: "fault at trace %.0f s: %@", r.traceNow, f.1))
                progress("  ! \(f.1) at trace \(Int(r.traceNow)) s")
            }
            if Date().timeIntervalSince(lastPrint) >= 2 {
                lastPrint = Date()
                let fin = r.jobs.filter { $0.phase == "finished" }.count, run = r.jobs.filter { $0.phase == "running" }.count
                progress(String(format: "  trace %6.0f s: %d/%d finished, %d running, %d waiting", r.traceNow, fin, r.jobs.count, run, Int(r.unfinished) - run))
            }
            if r.unfinished == 0 && r.jobs.count >= workload.jobs.count - log.filter({ $0.hasPrefix("rejected") }).count && pendingFaults.isEmpty {
                guard let d = driver else { return (r, nil, log) }
                let q = try client.requests()
                if d.allAnswered(q) { return (r, q, log) }
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
        throw ProcessLauncher.LaunchError(description: "the testbed run did not finish within \(Int(timeoutSeconds)) s (\(last?.unfinished ?? 0) jobs unfinished)")
    }

    /// The coordinator's request accounting as the twin reports services.
    public static func serviceOutcomes(_ r: RequestsReply?) -> [ServiceOutcome] {
        (r?.services ?? []).map { s in
            var o = ServiceOutcome(id: s.serviceID)
            o.offeredRequests = Double(s.submitted)
            o.servedWithinSLO = Double(s.withinSlo)
            o.latencyP50 = s.latencyP50
            o.latencyP99 = s.latencyP99
            if s.completed > 0 { o.ttftP50 = s.ttftP50; o.ttftP99 = s.ttftP99; o.tbtP99 = s.tbtP99 }
            return o
        }
    }

    /// The coordinator's view turned into the same result type the twin produces.
    public static func result(_ r: JobsReply, workload: Workload, nodes: [NodeSlot], wallSeconds: Double, notes: [String]) -> RunResult {
        var busy: [String: Double] = [:]
        let outcomes = r.jobs.map { j -> JobOutcome in
            let finish = j.finish >= 0 ? j.finish : nil
            if let f = finish, j.firstStart >= 0, !j.gpuModel.isEmpty { busy[j.gpuModel, default: 0] += (f - j.firstStart) * Double(j.gpus) }   // approximate: ignores gaps between preemption and resume
            return JobOutcome(id: j.jobID, kind: j.kind, arrival: j.arrival, firstStart: j.firstStart >= 0 ? j.firstStart : nil, finish: finish,
                              queueing: j.queueing, preemptions: Int(j.preemptions), restarts: Int(j.restarts), failedStarts: Int(j.failedStarts),
                              gpuModel: j.gpuModel.isEmpty ? nil : j.gpuModel, gpus: Int(j.gpus))
        }
        var gpus: [String: Int] = [:]
        for n in nodes { gpus[n.gpuModel, default: 0] += n.gpuCount }
        let first = workload.jobs.map { $0.arrival }.min() ?? 0
        let last = outcomes.compactMap { $0.finish }.max() ?? first
        return RunResult(policy: r.policy, workload: workload.name, engine: "testbed", emulated: true, jobs: outcomes, services: [],
                         busyGPUSeconds: busy, gpusByModel: gpus, makespan: last - first, skipped: notes + r.notes.dropFirst(), events: 0, wallSeconds: wallSeconds)
    }
}

/// Error of the twin against the testbed, per figure: |twin − testbed| / testbed.
public struct ValidationReport: Codable, Equatable {
    public var meanJCTError: Double
    public var p99JCTError: Double
    public var makespanError: Double
    public var testbed: RunSummary
    public var twin: RunSummary

    public init(testbed: RunResult, twin: RunResult) {
        let a = testbed.summary, b = twin.summary
        func err(_ x: Double, _ y: Double) -> Double { x > 0 ? abs(y - x) / x : .nan }
        self.testbed = a; self.twin = b
        meanJCTError = err(a.meanJCT, b.meanJCT)
        p99JCTError = err(a.p99JCT, b.p99JCT)
        makespanError = err(a.makespan, b.makespan)
    }

    public var worst: Double { [meanJCTError, p99JCTError, makespanError].max() ?? .nan }
}
