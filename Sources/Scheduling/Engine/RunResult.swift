import Foundation

/// What became of one job in a run.
public struct JobOutcome: Sendable, Codable, Equatable {
    public var id: String
    public var kind: String
    public var arrival: Double
    public var firstStart: Double?
    public var finish: Double?
    public var queueing: Double
    public var preemptions: Int
    public var restarts: Int
    public var failedStarts: Int
    public var gpuModel: String?
    public var gpus: Int?
    public var jct: Double? { finish.map { $0 - arrival } }

    public init(id: String, kind: String, arrival: Double, firstStart: Double?, finish: Double?, queueing: Double, preemptions: Int,
                restarts: Int, failedStarts: Int, gpuModel: String?, gpus: Int?) {
        self.id = id; self.kind = kind; self.arrival = arrival; self.firstStart = firstStart; self.finish = finish; self.queueing = queueing
        self.preemptions = preemptions; self.restarts = restarts; self.failedStarts = failedStarts; self.gpuModel = gpuModel; self.gpus = gpus
    }
}

/// Served versus offered requests of one online service.
public struct ServiceOutcome: Sendable, Codable, Equatable {
    public var id: String
    public var offeredRequests: Double = 0
    public var servedWithinSLO: Double = 0
    public var replicaSeconds: Double = 0
    /// Request by request (when the run had requests): latency from arrival to last token, trace s.
    public var latencyP50: Double?
    public var latencyP99: Double?
    /// Time to first token (arrival to first token) and requests' mean time between tokens, trace s.
    public var ttftP50: Double?
    public var ttftP99: Double?
    public var tbtP99: Double?
    /// The median over requests of each one's longest time between tokens (a prefill step
    /// stalling its batch, a migration's gap), trace s.
    public var maxTBTP50: Double?
    /// Engine preemptions (out of KV blocks) over its completed requests.
    public var preemptions: Int?
    public var attainment: Double { offeredRequests > 0 ? servedWithinSLO / offeredRequests : 1 }
    public init(id: String) { self.id = id }
}

/// One inference request's outcome, as the router recorded it: a row of `requests.csv`.
public struct RequestOutcome: Sendable, Codable, Equatable {
    public var id: String
    public var serviceID: String
    public var arrival: Double
    public var prefill: Int
    public var decode: Int
    public var replica: String?
    public var node: String?
    public var attempts: Int
    /// Trace seconds; nil until it finished.
    public var finished: Double?
    public var latency: Double?
    public var queued: Double
    public var serviceSeconds: Double
    public var ttft: Double?
    public var meanTBT: Double
    public var maxTBT: Double
    public var preemptions: Int
    /// Drawn high priority (the policies keep KV headroom for it).
    public var highPriority = false
    public init(id: String, serviceID: String, arrival: Double, prefill: Int, decode: Int, replica: String?, node: String?, attempts: Int,
                finished: Double?, latency: Double?, queued: Double, serviceSeconds: Double, ttft: Double?, meanTBT: Double, maxTBT: Double, preemptions: Int) {
        self.id = id; self.serviceID = serviceID; self.arrival = arrival; self.prefill = prefill; self.decode = decode; self.replica = replica
        self.node = node; self.attempts = attempts; self.finished = finished; self.latency = latency; self.queued = queued
        self.serviceSeconds = serviceSeconds; self.ttft = ttft; self.meanTBT = meanTBT; self.maxTBT = maxTBT; self.preemptions = preemptions
    }
}

/// The measurements of one run (testbed or twin) and their summary.
public struct RunResult: Sendable, Codable {
    public var policy: String
    public var workload: String
    public var engine: String              // "twin" or "testbed"
    public var emulated: Bool
    public var jobs: [JobOutcome]
    public var services: [ServiceOutcome]
    /// GPU-seconds allocated to offline jobs, per GPU model, and the GPUs of each model.
    public var busyGPUSeconds: [String: Double]
    public var gpusByModel: [String: Int]
    public var makespan: Double
    public var skipped: [String]
    public var events: Int
    public var wallSeconds: Double
    /// Live migrations of inference requests: counts by `reason/<r>` and `state/<s>`, and the
    /// downtimes (trace s) of those that moved.
    public var migrations: [String: Int] = [:]
    public var migrationDowntimes: [Double] = []
    /// Memory tiers: what the GPU agents' KV caches counted (`lookups`, `hits`, `hit_tokens`,
    /// `prompt_tokens`, `fallbacks`, `stored_chunks`, `swap_outs`, `swap_ins`, `decision/<why>`).
    public var tiers: [String: Int] = [:]
    /// Each inference request as the router recorded it (the rows of `requests.csv`). Left out
    /// of the run's JSON: a run of many requests is written as its own CSV instead.
    public var requests: [RequestOutcome] = []
    /// Each live migration as the twin's coordinator recorded it (the rows of `migrations.csv`);
    /// left out of the run's JSON, as `requests` is.
    public var migrationRecords: [MigrationOutcome] = []

    enum CodingKeys: String, CodingKey {
        case policy, workload, engine, emulated, jobs, services, busyGPUSeconds, gpusByModel, makespan, skipped, events, wallSeconds
        case migrations, migrationDowntimes, tiers
    }

    public var finished: [JobOutcome] { jobs.filter { $0.finish != nil } }

    public init(policy: String, workload: String, engine: String, emulated: Bool, jobs: [JobOutcome], services: [ServiceOutcome],
                busyGPUSeconds: [String: Double], gpusByModel: [String: Int], makespan: Double, skipped: [String], events: Int, wallSeconds: Double) {
        self.policy = policy; self.workload = workload; self.engine = engine; self.emulated = emulated; self.jobs = jobs; self.services = services
        self.busyGPUSeconds = busyGPUSeconds; self.gpusByModel = gpusByModel; self.makespan = makespan; self.skipped = skipped
        self.events = events; self.wallSeconds = wallSeconds
    }

    public var summary: RunSummary { RunSummary(self) }
}

public func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    let rank = p / 100 * Double(sorted.count - 1)
    let lo = Int(rank.rounded(.down)), hi = Int(rank.rounded(.up))
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - Double(lo))
}

public struct RunSummary: Sendable, Codable, Equatable {
    public var policy: String
    public var jobs: Int
    public var finished: Int
    public var meanJCT: Double
    public var medianJCT: Double
    public var p99JCT: Double
    public var meanQueueing: Double
    public var makespan: Double
    public var preemptions: Int
    public var restarts: Int
    public var failedStarts: Int
    public var utilization: [String: Double]
    public var sloAttainment: Double?

    public init(_ r: RunResult) {
        let jcts = r.finished.compactMap(\.jct).sorted()
        policy = r.policy
        jobs = r.jobs.count
        finished = jcts.count
        meanJCT = jcts.isEmpty ? .nan : jcts.reduce(0, +) / Double(jcts.count)
        medianJCT = percentile(jcts, 50)
        p99JCT = percentile(jcts, 99)
        meanQueueing = r.jobs.isEmpty ? .nan : r.jobs.map(\.queueing).reduce(0, +) / Double(r.jobs.count)
        makespan = r.makespan
        preemptions = r.jobs.map(\.preemptions).reduce(0, +)
        restarts = r.jobs.map(\.restarts).reduce(0, +)
        failedStarts = r.jobs.map(\.failedStarts).reduce(0, +)
        var u: [String: Double] = [:]
        for (m, n) in r.gpusByModel where n > 0 && r.makespan > 0 { u[m] = (r.busyGPUSeconds[m] ?? 0) / (Double(n) * r.makespan) }
        utilization = u
        let offered = r.services.map(\.offeredRequests).reduce(0, +)
        sloAttainment = offered > 0 ? r.services.map(\.servedWithinSLO).reduce(0, +) / offered : nil
    }
}

extension JobRecord {
    public var outcome: JobOutcome {
        JobOutcome(id: spec.id, kind: spec.kind.description, arrival: spec.arrival, firstStart: firstStart, finish: phase == .finished ? finishedAt : nil,
                   queueing: queueingDelay, preemptions: preemptions, restarts: restarts, failedStarts: failedStarts,
                   gpuModel: placement?.key.gpuModel ?? lastKey?.gpuModel, gpus: placement?.key.gpuCount ?? lastKey?.gpuCount)
    }
}

/// One live migration of an inference request, as the twin records it: what moved where, why,
/// how it ended, and when (trace seconds).
public struct MigrationOutcome: Sendable, Equatable {
    public var id: String
    public var request: String
    public var from = ""
    public var to = ""
    public var reason: String
    public var state: String
    public var tokens: Int
    public var stages: Int
    /// The extra stall (trace s); nil until the destination's first token, or when it never came.
    public var downtime: Double?
    /// Its KV went through a memory host (the destination had no room).
    public var staged = false
    public var started = 0.0
    /// When it ended (done or aborted); nil while in flight.
    public var ended: Double?
    /// Why it aborted, in the testbed's words (`MigrationAbort`'s description); nil when it did not.
    public var detail: String?
    public init(id: String, request: String, from: String, to: String, reason: String, state: String, tokens: Int, stages: Int, started: Double) {
        self.id = id; self.request = request; self.from = from; self.to = to; self.reason = reason
        self.state = state; self.tokens = tokens; self.stages = stages; self.started = started
    }
}
