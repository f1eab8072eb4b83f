import Foundation

/// How a job runs on a configuration — the emulation both the GPU agent and the digital twin
/// use, driven by the knowledge base's measured (or estimated) rows:
/// - **Rate**: the row's throughput; a configuration whose row says it does not fit fails at
///   start (out of memory) after loading.
/// - **Step time** = work per step / rate, with the coefficient of variation measured by Vidur's
///   operator profiles (median over the rows of that GPU model, else over all rows).
/// - **Restart cost**: framework start plus loading the FP16 weights at pageable host→GPU
///   bandwidth, then resuming from the last checkpoint (periodic, every `checkpointInterval` of
///   running time; a preemption checkpoints on the way out, a crash loses what came after).
/// - **Sharing**: two jobs on one GPU each run at Gavel's measured median co-location ratio.
public struct ExecutionModel: Sendable {
    public let kb: KnowledgeBase
    public var checkpointInterval: Double = 600
    public var frameworkStartSeconds: Double = 30
    /// Pageable host→GPU copy bandwidth, bytes/s (shared/data README: "pageable ≈ 10 GB/s").
    public var hostToGPUBytesPerSecond: Double = 10e9
    /// Tokens per sequence for LLM fine-tuning steps (the job's context window).
    public var sequenceLength: Double = 2048
    private let cvByGPU: [String: Double]
    private let cvOverall: Double

    public init(kb: KnowledgeBase) {
        self.kb = kb
        var by: [String: [Double]] = [:], all: [Double] = []
        for r in kb.offline.values where r.origin == .measured { if let cv = r.stepTimeCV, cv.isFinite { by[r.key.gpuModel, default: []].append(cv); all.append(cv) } }
        cvByGPU = by.mapValues { Estimator.median($0) ?? 0 }
        cvOverall = Estimator.median(all) ?? 0
    }

    public func truth(_ key: ConfigKey) -> PerfRow? { kb.offline[key] }

    public func fits(_ key: ConfigKey) -> Bool { truth(key)?.fits ?? false }

    /// Work per second on `key`; zero when it does not fit.
    public func rate(_ key: ConfigKey, sharing: Bool = false) -> Double {
        guard let r = truth(key), r.fits else { return 0 }
        let share = sharing ? (kb.fact("colocation_slowdown", gpu: key.gpuModel) ?? 1) : 1
        return r.throughput * share
    }

    public func stepTimeCV(_ gpu: String) -> Double { cvByGPU[gpu] ?? cvOverall }

    /// Work units per step on `key`.
    public func workPerStep(_ key: ConfigKey) -> Double {
        if key.task.hasPrefix("finetune") { return Double(key.batchPerGPU * key.gpuCount) * sequenceLength }
        return 1
    }

    public func stepTime(_ key: ConfigKey) -> Double? {
        let r = rate(key)
        return r > 0 ? workPerStep(key) / r : nil
    }

    public func restartSeconds(_ spec: JobSpec) -> Double {
        let weights = ModelCatalog.model(named: spec.kind.model)?.weightBytes ?? 0
        return frameworkStartSeconds + weights / hostToGPUBytesPerSecond
    }

    /// Work safe in the last periodic checkpoint after running `ranFor` seconds from `resume`.
    public func checkpointed(resume: Double, ranFor: Double, rate: Double) -> Double {
        guard ranFor > 0, rate > 0 else { return resume }
        return resume + (ranFor / checkpointInterval).rounded(.down) * checkpointInterval * rate
    }
}

/// Measurement noise as common random numbers: the k-th step-time measurement of a job's run on a
/// configuration draws the same standard normal in a GPU agent's emulation and in the digital
/// twin, so validation compares the same samples (a standard variance-reduction technique)
/// rather than two independent noise streams that steer online-learning policies apart.
public enum MeasurementNoise {
    public static func normal(job: String, key: ConfigKey, run: Double, index: Int) -> Double {
        var h: UInt64 = 0xcbf29ce484222325
        for b in "\(job)|\(key.gpuModel)|\(key.gpuCount)|\(run)|\(index)".utf8 { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        var rng = SplitMix64(seed: h)
        return rng.normal()
    }
}
