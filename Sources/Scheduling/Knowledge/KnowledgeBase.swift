import Foundation

/// The configuration-performance database a policy consults: offline rows (measured, or estimated
/// from measured rows by `Estimator`) and online rows learned from the step times GPU agents report.
public struct KnowledgeBase: Sendable {
    public private(set) var offline: [ConfigKey: PerfRow] = [:]
    public private(set) var online: [ConfigKey: PerfRow] = [:]
    public private(set) var facts: [KnowledgeFact] = []
    /// Weight of a new measurement in the online estimate.
    public var onlineAlpha = 0.3

    public init(rows: [PerfRow] = [], facts: [KnowledgeFact] = []) {
        for r in rows { add(r) }
        for f in facts { addFact(f) }
    }

    /// Adds a row; a measured row replaces an estimated one, never the other way round.
    public mutating func add(_ row: PerfRow) {
        switch row.origin {
        case .online: online[row.key] = row
        case .measured: offline[row.key] = row
        case .estimated: if offline[row.key]?.origin != .measured { offline[row.key] = row }
        }
    }

    public mutating func addFact(_ fact: KnowledgeFact) {
        facts.removeAll { $0.name == fact.name && $0.gpuModel == fact.gpuModel }
        facts.append(fact)
    }

    public func fact(_ name: String, gpu: String) -> Double? {
        facts.first { $0.name == name && $0.gpuModel == gpu }?.value
    }

    public var allRows: [PerfRow] {
        (Array(offline.values) + Array(online.values)).sorted { a, b in
            (a.key.model, a.key.task, a.key.gpuModel, a.key.gpuCount, a.key.layout + a.origin.rawValue, a.key.batchPerGPU)
                < (b.key.model, b.key.task, b.key.gpuModel, b.key.gpuCount, b.key.layout + b.origin.rawValue, b.key.batchPerGPU)
        }
    }

    public var jobKinds: [JobKind] {
        Array(Set(offline.keys.map(\.job))).sorted { ($0.model, $0.task, $0.batchPerGPU) < ($1.model, $1.task, $1.batchPerGPU) }
    }

    /// Offline rows of one job kind (packed layout), measured and estimated.
    public func offlineRows(for job: JobKind) -> [PerfRow] {
        offline.values.filter { $0.key.job == job && $0.key.layout == "packed" }
            .sorted { ($0.key.gpuModel, $0.key.gpuCount) < ($1.key.gpuModel, $1.key.gpuCount) }
    }

    /// Folds one measured step rate into the online estimate of `key` (exponentially weighted).
    public mutating func recordOnline(_ key: ConfigKey, throughput: Double, unit: String, stepTime: Double?) {
        guard throughput > 0, throughput.isFinite else { return }
        if var row = online[key] {
            row.throughput = (1 - onlineAlpha) * row.throughput + onlineAlpha * throughput
            if let s = stepTime { row.stepTime = (1 - onlineAlpha) * (row.stepTime ?? s) + onlineAlpha * s }
            row.samples += 1
            online[key] = row
        } else {
            online[key] = PerfRow(key: key, throughput: throughput, unit: unit, stepTime: stepTime, fits: true, origin: .online,
                                  samples: 1, source: "online: exponentially weighted step rates reported by GPU agents (alpha \(onlineAlpha))")
        }
    }

    /// Query: rows matching the given fields (nil = any).
    public func query(model: String? = nil, task: String? = nil, gpu: String? = nil, gpus: Int? = nil, origin: RowOrigin? = nil) -> [PerfRow] {
        allRows.filter { r in
            (model.map { r.key.model.lowercased() == ModelCatalog.canonicalName($0).lowercased() } ?? true)
                && (task.map { r.key.task == $0 } ?? true)
                && (gpu.map { GPUCatalog.model(named: $0)?.name == r.key.gpuModel } ?? true)
                && (gpus.map { r.key.gpuCount == $0 } ?? true)
                && (origin.map { r.origin == $0 } ?? true)
        }
    }
}
