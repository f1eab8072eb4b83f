import Foundation

/// An offline job (fine-tuning or training) as submitted.
public struct JobSpec: Sendable, Codable, Equatable {
    public var id: String
    public var kind: JobKind
    /// Seconds since the start of the trace.
    public var arrival: Double
    /// What the user asked for; `fifo` runs exactly this, informed policies may choose otherwise.
    public var requestedGPUModel: String?
    public var requestedGPUs: Int
    /// Total work in the knowledge base's unit for this kind (tokens or steps).
    public var work: Double
    public var unit: String
    public var priority: Int
    /// May run on fewer GPUs than asked (shrink instead of preempt).
    public var elastic: Bool

    public init(id: String, kind: JobKind, arrival: Double, requestedGPUModel: String?, requestedGPUs: Int,
                work: Double, unit: String, priority: Int = 1, elastic: Bool = false) {
        self.id = id; self.kind = kind; self.arrival = arrival; self.requestedGPUModel = requestedGPUModel
        self.requestedGPUs = requestedGPUs; self.work = work; self.unit = unit; self.priority = priority; self.elastic = elastic
    }
}

/// An online inference service: a model served on replicas of `gpusPerReplica` GPUs of
/// `gpuModel`, under a request-rate curve, with a latency SLO.
public struct ServiceSpec: Sendable, Codable, Equatable {
    public var id: String
    public var model: String
    public var gpuModel: String
    public var gpusPerReplica: Int
    /// (trace seconds, requests/s) points; the rate holds until the next point.
    public var rateCurve: [RatePoint]
    public var meanPrefillTokens: Double
    public var meanDecodeTokens: Double
    /// End-to-end latency objective per request, seconds.
    public var sloSeconds: Double
    public var minReplicas: Int
    /// (prefill, decode) token counts generated requests draw from (empty: the means).
    public var requestMix: [TokenCount] = []
    /// Sequences a replica's engine runs at once while its KV blocks last, as vLLM's
    /// `max_num_seqs` (0: the planned batch, so the engine never holds more than it was planned for).
    public var maxNumSeqs = 0
    /// Layers that do not fit the GPUs are kept in a memory host's tier and streamed every step
    /// (`WeightOffloadPlan`); off: a model larger than its GPUs is refused.
    public var offloadWeights = false
    /// Share of each GPU's memory a replica uses for weights and KV cache, as vLLM's
    /// `gpu_memory_utilization`: lower it to study a KV-memory-bound engine.
    public var gpuMemoryUtilization = InferenceModel.defaultMemoryUtilization
    /// What each replica's engine may run at once.
    public func engineSlots(batch: Int) -> Int { max(batch, maxNumSeqs) }

    public init(id: String, model: String, gpuModel: String, gpusPerReplica: Int, rateCurve: [RatePoint],
                meanPrefillTokens: Double, meanDecodeTokens: Double, sloSeconds: Double, minReplicas: Int = 1) {
        self.id = id; self.model = model; self.gpuModel = gpuModel; self.gpusPerReplica = gpusPerReplica
        self.rateCurve = rateCurve; self.meanPrefillTokens = meanPrefillTokens; self.meanDecodeTokens = meanDecodeTokens
        self.sloSeconds = sloSeconds; self.minReplicas = minReplicas
    }

    enum CodingKeys: String, CodingKey {
        case id, model, gpuModel, gpusPerReplica, rateCurve, meanPrefillTokens, meanDecodeTokens, sloSeconds, minReplicas, requestMix, maxNumSeqs, offloadWeights, gpuMemoryUtilization
    }

    /// Fields added later decode as their defaults when a stored spec lacks them.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id); model = try c.decode(String.self, forKey: .model)
        gpuModel = try c.decode(String.self, forKey: .gpuModel); gpusPerReplica = try c.decode(Int.self, forKey: .gpusPerReplica)
        rateCurve = try c.decode([RatePoint].self, forKey: .rateCurve)
        meanPrefillTokens = try c.decode(Double.self, forKey: .meanPrefillTokens); meanDecodeTokens = try c.decode(Double.self, forKey: .meanDecodeTokens)
        sloSeconds = try c.decode(Double.self, forKey: .sloSeconds); minReplicas = try c.decode(Int.self, forKey: .minReplicas)
        requestMix = try c.decodeIfPresent([TokenCount].self, forKey: .requestMix) ?? []
        maxNumSeqs = try c.decodeIfPresent(Int.self, forKey: .maxNumSeqs) ?? 0
        offloadWeights = try c.decodeIfPresent(Bool.self, forKey: .offloadWeights) ?? false
        gpuMemoryUtilization = try c.decodeIfPresent(Double.self, forKey: .gpuMemoryUtilization) ?? InferenceModel.defaultMemoryUtilization
    }

    public func rate(at t: Double) -> Double {
        var r = rateCurve.first?.rps ?? 0
        for p in rateCurve { if p.time <= t { r = p.rps } else { break } }
        return r
    }
}

public struct TokenCount: Sendable, Codable, Equatable {
    public var prefill: Int
    public var decode: Int
    public init(prefill: Int, decode: Int) { self.prefill = prefill; self.decode = decode }
}

public struct RatePoint: Sendable, Codable, Equatable {
    public var time: Double
    public var rps: Double
    public init(time: Double, rps: Double) { self.time = time; self.rps = rps }
}

/// A workload: offline jobs and online services, with what was skipped while reading it.
public struct Workload: Sendable, Codable {
    public var name: String
    public var jobs: [JobSpec]
    public var services: [ServiceSpec]
    public var skipped: [DataError]
    public init(name: String, jobs: [JobSpec], services: [ServiceSpec] = [], skipped: [DataError] = []) {
        self.name = name; self.jobs = jobs.sorted { ($0.arrival, $0.id) < ($1.arrival, $1.id) }; self.services = services; self.skipped = skipped
    }
}

