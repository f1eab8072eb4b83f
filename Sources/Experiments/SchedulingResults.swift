import Foundation
import Scheduling

/// Writes the results of scheduling runs (twin or testbed) into a results folder: every run as
/// JSON, `jobs.csv`, `summary.csv`/`summary.json` (per policy, averaged over traces), the JCT CDF
/// (one curve per policy, the D2.1 figure) and `report.html` with the plots and the table.
public struct SchedulingResults {
    public var runs: [RunResult] = []
    public var notes: [String] = []
    public init() {}

    /// One row per policy: means over its runs (traces) of each run's figures.
    public struct PolicyRow: Codable, Equatable {
        public var policy: String
        public var runs: Int
        public var jobs: Int
        public var finished: Int
        public var meanJCTHours: Double
        public var medianJCTHours: Double
        public var p99JCTHours: Double
        public var meanQueueingHours: Double
        public var makespanHours: Double
        public var preemptions: Double
        public var restarts: Double
        public var utilization: [String: Double]
        public var sloAttainment: Double?
    }

    public var policyOrder: [String] {
        var seen: [String] = []
        for r in runs where !seen.contains(r.policy) { seen.append(r.policy) }
        return seen
    }

    public func rows() -> [PolicyRow] {
        policyOrder.map { p in
            let rs = runs.filter { $0.policy == p }.map(\.summary)
            func mean(_ f: (RunSummary) -> Double) -> Double { let v = rs.map(f).filter(\.isFinite); return v.isEmpty ? .nan : v.reduce(0, +) / Double(v.count) }
            var util: [String: Double] = [:]
            for m in Set(rs.flatMap { $0.utilization.keys }) { util[m] = mean { $0.utilization[m] ?? 0 } }
            let slo = rs.compactMap(\.sloAttainment)
            return PolicyRow(policy: p, runs: rs.count, jobs: rs.map(\.jobs).reduce(0, +), finished: rs.map(\.finished).reduce(0, +),
                             meanJCTHours: mean(\.meanJCT) / 3600, medianJCTHours: mean(\.medianJCT) / 3600, p99JCTHours: mean(\.p99JCT) / 3600,
                             meanQueueingHours: mean(\.meanQueueing) / 3600, makespanHours: mean(\.makespan) / 3600,
                             preemptions: mean { Double($0.preemptions) }, restarts: mean { Double($0.restarts) }, utilization: util,
                             sloAttainment: slo.isEmpty ? nil : slo.reduce(0, +) / Double(slo.count))
        }
    }

    public func table() -> String {
        let rows = rows()
        let models = Array(Set(rows.flatMap { $0.utilization.keys })).sorted()
        var header = ["policy", "runs", "finished", "mean JCT h", "median h", "p99 h", "queue h", "makespan h", "preempt", "restarts"]
        header += models.map { "util \($0)" } + ["SLO"]
        var lines = [header]
        for r in rows {
            var l = [r.policy, "\(r.runs)", "\(r.finished)/\(r.jobs)", f2(r.meanJCTHours), f2(r.medianJCTHours), f2(r.p99JCTHours),
                     f2(r.meanQueueingHours), f2(r.makespanHours), String(format: "%.1f", r.preemptions), String(format: "%.1f", r.restarts)]
            l += models.map { String(format: "%.0f%%", (r.utilization[$0] ?? 0) * 100) }
            l.append(r.sloAttainment.map { String(format: "%.1f%%", $0 * 100) } ?? "-")
            lines.append(l)
        }
        let widths = header.indices.map { i in lines.map { $0[i].count }.max()! }
        return lines.map { l in l.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "  ") }
            .joined(separator: "\n")
    }

    /// The table as Markdown (for README and the report).
    public func markdownTable() -> String {
        let rows = rows()
        var s = "| policy | finished | mean JCT (h) | median JCT (h) | p99 JCT (h) | queueing (h) | makespan (h) | preemptions | SLO attainment |\n"
        s += "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        for r in rows {
            s += "| \(r.policy) | \(r.finished)/\(r.jobs) | \(f2(r.meanJCTHours)) | \(f2(r.medianJCTHours)) | \(f2(r.p99JCTHours)) | \(f2(r.meanQueueingHours)) | \(f2(r.makespanHours)) | \(String(format: "%.1f", r.preemptions)) | \(r.sloAttainment.map { String(format: "%.1f%%", $0 * 100) } ?? "-") |\n"
        }
        return s
    }

    func f2(_ x: Double) -> String { x.isFinite ? String(format: "%.2f", x) : "-" }

    public func jctCDF() -> SVGPlot {
        var plot = SVGPlot(title: "Job completion time CDF (\(Set(runs.map(\.workload)).count) traces)", xLabel: "JCT (hours, log scale)", yLabel: "fraction of jobs", logX: true)
        for p in policyOrder {
            let jcts = runs.filter { $0.policy == p }.flatMap { $0.finished.compactMap(\.jct) }.map { $0 / 3600 }
            plot.series.append(.init(name: p, points: SVGPlot.cdf(jcts)))
        }
        return plot
    }

    public func write(to dir: String, title: String, extraHTML: String = "") throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/runs", withIntermediateDirectories: true)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        for r in runs {
            try enc.encode(r).write(to: URL(fileURLWithPath: "\(dir)/runs/\(r.engine)-\(r.policy)-\(r.workload).json"))
        }
        var csv = "engine,policy,workload,job,kind,arrival_s,first_start_s,finish_s,jct_s,queueing_s,preemptions,restarts,failed_starts,gpu_model,gpus\n"
        for r in runs {
            for j in r.jobs {
                csv += "\(r.engine),\(r.policy),\(r.workload),\(j.id),\(j.kind),\(j.arrival),\(j.firstStart.map { "\($0)" } ?? ""),\(j.finish.map { "\($0)" } ?? ""),\(j.jct.map { "\($0)" } ?? ""),\(j.queueing),\(j.preemptions),\(j.restarts),\(j.failedStarts),\(j.gpuModel ?? ""),\(j.gpus.map { "\($0)" } ?? "")\n"
            }
        }
        try csv.write(toFile: dir + "/jobs.csv", atomically: true, encoding: .utf8)
        let rows = rows()
        try enc.encode(["title": title]).write(to: URL(fileURLWithPath: dir + "/title.json"))
        try enc.encode(rows).write(to: URL(fileURLWithPath: dir + "/summary.json"))
        var sc = "policy,runs,jobs,finished,mean_jct_h,median_jct_h,p99_jct_h,mean_queueing_h,makespan_h,preemptions,restarts,slo_attainment\n"
        for r in rows { sc += "\(r.policy),\(r.runs),\(r.jobs),\(r.finished),\(r.meanJCTHours),\(r.medianJCTHours),\(r.p99JCTHours),\(r.meanQueueingHours),\(r.makespanHours),\(r.preemptions),\(r.restarts),\(r.sloAttainment.map { "\($0)" } ?? "")\n" }
        try sc.write(toFile: dir + "/summary.csv", atomically: true, encoding: .utf8)
        let cdf = jctCDF().render()
        try cdf.write(toFile: dir + "/jct_cdf.svg", atomically: true, encoding: .utf8)
        var util = "<table><tr><th>policy</th>"
        let models = Array(Set(rows.flatMap { $0.utilization.keys })).sorted()
        util += models.map { "<th>\($0)</th>" }.joined() + "</tr>"
        for r in rows { util += "<tr><td>\(r.policy)</td>" + models.map { String(format: "<td>%.1f%%</td>", (r.utilization[$0] ?? 0) * 100) }.joined() + "</tr>" }
        util += "</table>"
        let skipped = Array(Set(runs.flatMap(\.skipped))).sorted()
        let emulated = runs.contains(where: \.emulated)
        let html = """
        <!doctype html><html><head><meta charset="utf-8"><title>\(title)</title>
        <style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}</style></head><body>
        <h1>\(title)</h1>
        \(emulated ? "<p><b>Emulation:</b> GPUs and job execution are emulated from published measurements (VectorLM, Gavel, Vidur) and estimates derived from them; no real GPU ran these jobs.</p>" : "")
        <h2>Summary (mean over runs)</h2>
        <pre>\(table())</pre>
        <h2>Job completion time</h2>
        \(cdf)
        <h2>GPU allocation by model</h2>
        \(util)
        \(extraHTML)
        <h2>Notes</h2><ul>\(notes.map { "<li>\($0)</li>" }.joined())</ul>
        <h2>Skipped (\(skipped.count))</h2><ul>\(skipped.prefix(200).map { "<li>\($0)</li>" }.joined())</ul>
        </body></html>
        """
        try html.write(toFile: dir + "/report.html", atomically: true, encoding: .utf8)
    }
}
