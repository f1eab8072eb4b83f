import Foundation

/// Where a knowledge-base row came from.
public enum RowOrigin: String, Sendable, Codable, CaseIterable {
    /// Measured and published (VectorLM, Gavel, Vidur).
    case measured
    /// Derived by a stated model from measured rows (see `Estimator`).
    case estimated
    /// Learned at run time from step times the GPU agents reported.
    case online
}

/// What a configuration is: the job's model and task on `gpuCount` GPUs of `gpuModel`, laid out
/// `packed` on one server or `spread` over several, with `batchPerGPU` samples per GPU.
public struct ConfigKey: Hashable, Sendable, Codable, CustomStringConvertible {
    public var model: String
    public var task: String
    public var gpuModel: String
    public var gpuCount: Int
    public var layout: String
    public var batchPerGPU: Int

    public init(model: String, task: String, gpuModel: String, gpuCount: Int, layout: String = "packed", batchPerGPU: Int) {
        self.model = model; self.task = task; self.gpuModel = gpuModel
        self.gpuCount = gpuCount; self.layout = layout; self.batchPerGPU = batchPerGPU
    }

    /// The job this configuration runs (everything but the GPUs).
    public var job: JobKind { JobKind(model: model, task: task, batchPerGPU: batchPerGPU) }

    public var description: String { "\(model)/\(task)/b\(batchPerGPU) on \(gpuCount)x\(gpuModel)(\(layout))" }
}

/// A kind of job: what the knowledge base is keyed on apart from the GPUs.
public struct JobKind: Hashable, Sendable, Codable, CustomStringConvertible {
    public var model: String
    public var task: String
    public var batchPerGPU: Int
    public init(model: String, task: String, batchPerGPU: Int) {
        self.model = model; self.task = task; self.batchPerGPU = batchPerGPU
    }
    public var description: String { "\(model)/\(task)/b\(batchPerGPU)" }
}

/// One row of the configuration-performance database.
public struct PerfRow: Sendable, Codable, Equatable {
    public var key: ConfigKey
    /// Work done per second in `unit` (tokens/s for LLM fine-tuning, steps/s for training, tokens/s
    /// of one forward iteration for inference). Zero when the configuration does not fit.
    public var throughput: Double
    public var unit: String
    /// Seconds per step: one optimizer step (training), one forward iteration (inference).
    public var stepTime: Double?
    /// False when the configuration ran out of memory (the published `nan`s) or is estimated not to fit.
    public var fits: Bool
    /// GPU memory the configuration needs, per GPU, GiB, when known or estimated.
    public var memoryGiBPerGPU: Double?
    /// Coefficient of variation of the step time (standard deviation / mean), when measured.
    public var stepTimeCV: Double?
    public var origin: RowOrigin
    /// Number of measurements behind an online row (1 for published rows).
    public var samples: Int
    public var source: String

    public init(key: ConfigKey, throughput: Double, unit: String, stepTime: Double? = nil, fits: Bool = true,
                memoryGiBPerGPU: Double? = nil, stepTimeCV: Double? = nil, origin: RowOrigin, samples: Int = 1, source: String) {
        self.key = key; self.throughput = throughput; self.unit = unit; self.stepTime = stepTime; self.fits = fits
        self.memoryGiBPerGPU = memoryGiBPerGPU; self.stepTimeCV = stepTimeCV; self.origin = origin
        self.samples = samples; self.source = source
    }
}

/// A bad row in a data file, naming the file, line and field.
public struct DataError: Error, CustomStringConvertible, Equatable, Sendable, Codable {
    public let file: String
    public let line: Int
    public let field: String
    public let message: String
    public init(file: String, line: Int, field: String, message: String) {
        self.file = file; self.line = line; self.field = field; self.message = message
    }
    public var description: String { "\(file):\(line): \(field): \(message)" }
}
