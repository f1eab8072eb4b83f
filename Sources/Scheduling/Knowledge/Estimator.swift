import Foundation

/// Fills (job, GPU model, GPU count) configurations that were never measured, and marks them
/// `estimated`. The model, in order of preference:
///
/// 1. **Other counts on the same GPU** — from the nearest measured count, scaled by how the
///    same job scaled between those counts on another GPU, or else by the median scaling of all
///    jobs of the same task measured at both counts.
/// 2. **Other GPU types (Sia-style)** — from the job's throughput on a measured GPU type, times
///    the median ratio between the two GPU types of reference jobs measured on both at that count.
/// 3. **Datasheets** — where no reference job was measured on both types: the geometric mean of the
///    dense FP16 TFLOPS ratio and the memory-bandwidth ratio (a roofline-style blend of
///    compute-bound and memory-bound work).
///
/// Memory fit: a configuration fits if a measured fitting one had no more memory per GPU and no
/// more GPUs; it does not fit if a measured non-fitting one had at least as much memory per GPU and
/// at least as many GPUs; otherwise it fits when its total memory reaches the smallest total of a
/// measured fitting configuration of the same job.
public enum Estimator {
    public static func estimateMissing(in kb: inout KnowledgeBase, gpuModels: [String], counts: [Int] = [1, 2, 4, 8]) -> Int {
        let measured = kb.offline.values.filter { $0.origin == .measured && $0.key.layout == "packed" && $0.key.task != "inference" }
        var byJob: [JobKind: [PerfRow]] = [:]
        for r in measured { byJob[r.key.job, default: []].append(r) }
        var added = 0
        for (job, rows) in byJob.sorted(by: { $0.key.description < $1.key.description }) {
            for gpu in gpuModels {
                guard let g = GPUCatalog.model(named: gpu) else { continue }
                for n in counts {
                    let key = ConfigKey(model: job.model, task: job.task, gpuModel: g.name, gpuCount: n, batchPerGPU: job.batchPerGPU)
                    if kb.offline[key] != nil { continue }
                    guard let est = estimate(key, jobRows: rows, allMeasured: measured, unit: rows[0].unit) else { continue }
                    kb.add(est)
                    added += 1
                }
            }
        }
        return added
    }

    static func throughput(_ rows: [PerfRow], gpu: String, count: Int) -> Double? {
        rows.first { $0.key.gpuModel == gpu && $0.key.gpuCount == count && $0.fits }?.throughput
    }

    static func median(_ xs: [Double]) -> Double? {
        guard !xs.isEmpty else { return nil }
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    static func estimate(_ key: ConfigKey, jobRows: [PerfRow], allMeasured: [PerfRow], unit: String) -> PerfRow? {
        guard let target = GPUCatalog.model(named: key.gpuModel) else { return nil }
        let fits = memoryFit(key, target: target, jobRows: jobRows)
        if !fits {
            return PerfRow(key: key, throughput: 0, unit: unit, fits: false, origin: .estimated,
                           source: "estimated not to fit: a measured configuration with at least this memory per GPU and GPU count did not fit, or less total memory than any that fit")
        }
        // 1. Other counts on the same GPU.
        let sameGPU = jobRows.filter { $0.key.gpuModel == key.gpuModel && $0.fits }
        if let nearest = sameGPU.min(by: { abs(log2(Double($0.key.gpuCount) / Double(key.gpuCount))) < abs(log2(Double($1.key.gpuCount) / Double(key.gpuCount))) }),
           let (scale, how) = countScaling(from: nearest.key.gpuCount, to: key.gpuCount, job: key.job, jobRows: jobRows, allMeasured: allMeasured) {
            return PerfRow(key: key, throughput: nearest.throughput * scale, unit: unit, stepTime: nearest.stepTime.map { $0 / scale * Double(key.gpuCount) / Double(nearest.key.gpuCount) },
                           fits: true, origin: .estimated,
                           source: "estimated from \(nearest.key.gpuCount)x\(key.gpuModel) (measured) × \(String(format: "%.3f", scale)) scaling (\(how))")
        }
        // 2./3. Another GPU type at the same count (or the nearest count there, then scaled).
        var best: (Double, String)? = nil
        for src in Set(jobRows.filter { $0.fits }.map(\.key.gpuModel)).sorted() {
            let srcRows = jobRows.filter { $0.key.gpuModel == src && $0.fits }
            guard let base = srcRows.first(where: { $0.key.gpuCount == key.gpuCount }) ?? srcRows.min(by: { abs($0.key.gpuCount - key.gpuCount) < abs($1.key.gpuCount - key.gpuCount) }) else { continue }
            var thr = base.throughput
            var how = "\(base.key.gpuCount)x\(src)"
            if base.key.gpuCount != key.gpuCount {
                guard let (s, h) = countScaling(from: base.key.gpuCount, to: key.gpuCount, job: key.job, jobRows: jobRows, allMeasured: allMeasured) else { continue }
                thr *= s; how += " scaled ×\(String(format: "%.3f", s)) (\(h))"
            }
            let (ratio, ratioHow) = gpuRatio(from: src, to: key.gpuModel, count: key.gpuCount, allMeasured: allMeasured, excluding: key.job)
            let candidate = (thr * ratio, "estimated from \(how) × \(String(format: "%.3f", ratio)) (\(ratioHow))")
            // Prefer Sia-style references over datasheets, then the larger source throughput.
            if best == nil || (candidate.1.contains("reference") && !(best!.1.contains("reference"))) { best = candidate }
        }
        guard let (thr, source) = best else { return nil }
        return PerfRow(key: key, throughput: thr, unit: unit, stepTime: unit == "steps/s" ? 1 / thr : nil, fits: true, origin: .estimated, source: source)
    }

    /// Throughput ratio for going from `from` GPUs to `to` GPUs.
    static func countScaling(from: Int, to: Int, job: JobKind, jobRows: [PerfRow], allMeasured: [PerfRow]) -> (Double, String)? {
        if from == to { return (1, "same count") }
        for other in Set(jobRows.map(\.key.gpuModel)).sorted() {
            if let a = throughput(jobRows, gpu: other, count: from), let b = throughput(jobRows, gpu: other, count: to) {
                return (b / a, "same job on \(other)")
            }
        }
        var ratios: [Double] = []
        var pairs: [String: [Int: Double]] = [:]
        for r in allMeasured where r.key.task == job.task && r.fits { pairs["\(r.key.job)|\(r.key.gpuModel)", default: [:]][r.key.gpuCount] = r.throughput }
        for (_, byCount) in pairs { if let a = byCount[from], let b = byCount[to] { ratios.append(b / a) } }
        if let m = median(ratios) { return (m, "median of \(ratios.count) \(job.task) jobs measured at \(from) and \(to) GPUs") }
        // Chain through a measured intermediate count (e.g. 4 → 8 via the 4 → 2 scaling inverted is not
        // allowed; only extrapolate upwards by the last measured doubling).
        if to > from, to == from * 2 {
            var doublings: [Double] = []
            for (_, byCount) in pairs { if let a = byCount[from / 2], let b = byCount[from], from >= 2 { doublings.append(b / a) } }
            if let m = median(doublings) { return (m, "median last doubling \(from / 2)→\(from) of \(doublings.count) \(job.task) jobs, applied to \(from)→\(to)") }
        }
        return nil
    }

    /// Throughput ratio target/source for GPU types.
    static func gpuRatio(from: String, to: String, count: Int, allMeasured: [PerfRow], excluding: JobKind) -> (Double, String) {
        var byJob: [JobKind: [String: Double]] = [:]
        for r in allMeasured where r.fits && r.key.gpuCount == count && r.key.job != excluding { byJob[r.key.job, default: [:]][r.key.gpuModel] = r.throughput }
        let ratios = byJob.values.compactMap { m -> Double? in
            guard let a = m[from], let b = m[to] else { return nil }
            return b / a
        }
        if let med = median(ratios) { return (med, "median \(from)→\(to) ratio of \(ratios.count) reference jobs measured on both") }
        let a = GPUCatalog.model(named: from)!, b = GPUCatalog.model(named: to)!
        let r = ((b.fp16TFLOPS / a.fp16TFLOPS) * (b.memoryBandwidthGBps / a.memoryBandwidthGBps)).squareRoot()
        return (r, "datasheets: √(TFLOPS ratio × bandwidth ratio) \(from)→\(to)")
    }

    static func memoryFit(_ key: ConfigKey, target: GPUModel, jobRows: [PerfRow]) -> Bool {
        func mem(_ r: PerfRow) -> Double { GPUCatalog.model(named: r.key.gpuModel)?.memoryGiB ?? 0 }
        if jobRows.contains(where: { $0.fits && mem($0) <= target.memoryGiB && $0.key.gpuCount <= key.gpuCount }) { return true }
        if jobRows.contains(where: { !$0.fits && mem($0) >= target.memoryGiB && $0.key.gpuCount >= key.gpuCount }) { return false }
        let minTotal = jobRows.filter(\.fits).map { mem($0) * Double($0.key.gpuCount) }.min() ?? .infinity
        return target.memoryGiB * Double(key.gpuCount) >= minTotal
    }
}
