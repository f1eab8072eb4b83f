import Foundation

/// Generates job traces in the shape the CLOUDSTARS D2.1 report used: the busiest 24-hour window
/// of a cluster, 40 jobs per hour (960 jobs), one trace per seed.
///
/// Distributions and where their shape comes from:
/// - **Arrivals**: a two-state Markov-modulated Poisson process (calm / burst, the burst state
///   arriving `burstFactor`× faster and lasting `burstFraction` of the time), rescaled so the mean
///   rate is exactly `jobsPerHour`. Production GPU traces (Microsoft Philly, Jeon et al. ATC'19;
///   SenseTime Helios, Hu et al. SC'21) report bursty, far-from-Poisson submissions.
/// - **GPUs per job**: categorical over 1/2/4/8 (`gpuShares`), most jobs on one GPU with a tail to
///   a full 8-GPU server, the shape Philly and Helios report.
/// - **Duration** on the requested configuration: log-normal (`durationMedianHours`,
///   `durationSigma`), the heavy tail both traces report; capped at `maxDurationHours`.
/// - **Job kinds**: `llmShare` LLM fine-tuning kinds from the knowledge base (VectorLM: full and LoRA),
///   the rest training kinds (Gavel). The work (tokens or steps) is duration × the knowledge base's
///   throughput on the requested configuration, so a job's size comes from measured figures.
/// - **Requested configuration**: a GPU model of the cluster drawn uniformly among those the job
///   fits on, and the smallest count ≥ the drawn count that fits.
public struct TraceGenerator: Sendable {
    public var jobsPerHour = 40.0
    public var hours = 24.0
    public var burstFactor = 4.0
    public var burstFraction = 0.2
    public var meanBurstMinutes = 30.0
    public var gpuShares: [(Int, Double)] = [(1, 0.7), (2, 0.15), (4, 0.1), (8, 0.05)]
    public var durationMedianHours = 0.3
    public var durationSigma = 1.2
    public var maxDurationHours = 24.0
    public var llmShare = 0.5
    public var elasticShare = 0.2

    public init() {}

    public enum GenerationError: Error, CustomStringConvertible {
        case noJobKinds(String)
        public var description: String {
            switch self { case .noJobKinds(let s): return "no job kind fits the cluster: \(s)" }
        }
    }

    /// Generates a trace for a cluster whose GPU models and largest node (GPUs) per model are given.
    public func generate(seed: UInt64, kb: KnowledgeBase, maxGPUsPerNode: [String: Int], name: String? = nil) throws -> Workload {
        let gpuModels = maxGPUsPerNode.keys.sorted()
        var rng = SplitMix64(seed: seed)
        let count = Int((jobsPerHour * hours).rounded())
        // Candidate kinds with the (gpu model, count, throughput) configurations they fit.
        var llm: [(JobKind, [PerfRow])] = [], train: [(JobKind, [PerfRow])] = []
        for kind in kb.jobKinds where kind.task != "inference" {
            let rows = kb.offlineRows(for: kind).filter { $0.fits && $0.key.gpuCount <= (maxGPUsPerNode[$0.key.gpuModel] ?? 0) }
            guard !rows.isEmpty else { continue }
            if kind.task.hasPrefix("finetune") { llm.append((kind, rows)) } else { train.append((kind, rows)) }
        }
        guard !llm.isEmpty || !train.isEmpty else { throw GenerationError.noJobKinds("largest nodes per GPU model \(maxGPUsPerNode)") }

        // Arrivals from the MMPP, then scaled to exactly `hours`.
        var times: [Double] = []
        var t = 0.0, burst = false
        let calmRate = 1.0 / (1 - burstFraction + burstFraction * burstFactor)
        var stateLeft = rng.exponential(mean: meanBurstMinutes * (1 - burstFraction) / burstFraction)
        while times.count < count {
            let rate = burst ? calmRate * burstFactor : calmRate
            let gap = rng.exponential(mean: 1 / rate)
            if gap > stateLeft {
                t += stateLeft
                burst.toggle()
                stateLeft = rng.exponential(mean: burst ? meanBurstMinutes : meanBurstMinutes * (1 - burstFraction) / burstFraction)
                continue
            }
            stateLeft -= gap
            t += gap
            times.append(t)
        }
        let scale = hours * 3600 / (times.last! * Double(count + 1) / Double(count))
        var jobs: [JobSpec] = []
        for (i, at) in times.enumerated() {
            let pool = (!llm.isEmpty && (train.isEmpty || rng.uniform() < llmShare)) ? llm : train
            let (kind, rows) = rng.pick(pool)
            let gpu = rng.pick(Array(Set(rows.map(\.key.gpuModel))).sorted())
            let wanted = rng.weighted(gpuShares)
            let onGPU = rows.filter { $0.key.gpuModel == gpu }.sorted { $0.key.gpuCount < $1.key.gpuCount }
            let row = onGPU.first { $0.key.gpuCount >= wanted } ?? onGPU.last!
            let hoursLong = min(rng.logNormal(median: durationMedianHours, sigma: durationSigma), maxDurationHours)
            jobs.append(JobSpec(id: String(format: "job-%04d", i), kind: kind, arrival: (at * scale).rounded(), requestedGPUModel: gpu,
                                requestedGPUs: row.key.gpuCount, work: (hoursLong * 3600 * row.throughput).rounded(.up), unit: row.unit,
                                priority: 1, elastic: rng.uniform() < elasticShare))
        }
        return Workload(name: name ?? "generated-seed\(seed)", jobs: jobs)
    }
}

/// Reads Gavel's job traces: tab-separated job type, command, step flag, scale factor (GPUs),
/// total steps, arrival time (s), priority weight.
public enum GavelTraceReader {
    public static func read(file: String, kb: KnowledgeBase?, limit: Int? = nil) throws -> Workload {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw DataError(file: file, line: 0, field: "(file)", message: "cannot read the file")
        }
        return parse(text, file: file, kb: kb, limit: limit)
    }

    public static func parse(_ text: String, file: String, kb: KnowledgeBase?, limit: Int? = nil) -> Workload {
        var jobs: [JobSpec] = [], skipped: [DataError] = []
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            if let limit, jobs.count >= limit { break }
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            let n = i + 1
            guard f.count == 7 else { skipped.append(DataError(file: file, line: n, field: "row", message: "\(f.count) tab-separated fields, expected 7")); continue }
            guard let (model, batch, _) = GavelThroughputReader.parseJobKey("('\(f[0])', 1)") else {
                skipped.append(DataError(file: file, line: n, field: "job type", message: "'\(f[0])' is not 'Model (batch size B)'")); continue
            }
            guard let scale = Int(f[3]), scale >= 1 else { skipped.append(DataError(file: file, line: n, field: "scale factor", message: "'\(f[3])' is not a GPU count ≥ 1")); continue }
            guard let steps = Double(f[4]), steps > 0 else { skipped.append(DataError(file: file, line: n, field: "total steps", message: "'\(f[4])' is not a positive number")); continue }
            guard let arrival = Double(f[5]), arrival >= 0 else { skipped.append(DataError(file: file, line: n, field: "arrival time", message: "'\(f[5])' is not a time ≥ 0")); continue }
            let priority = Int(Double(f[6]) ?? 1)
            let kind = JobKind(model: model, task: "train", batchPerGPU: batch)
            if let kb, kb.offlineRows(for: kind).isEmpty {
                skipped.append(DataError(file: file, line: n, field: "job type", message: "unknown model '\(f[0])' (not in the knowledge base)")); continue
            }
            jobs.append(JobSpec(id: String(format: "gavel-%05d", n), kind: kind, arrival: arrival, requestedGPUModel: nil,
                                requestedGPUs: scale, work: steps, unit: "steps/s", priority: max(priority, 1)))
        }
        return Workload(name: (file as NSString).lastPathComponent, jobs: jobs, skipped: skipped)
    }
}
