import Foundation
import Scheduling

/// `migrations.csv`: one row per migration as the coordinator recorded it.
public enum MigrationsTable {
    public static func write(_ m: MigrationAccounting, to file: String) throws {
        var s = "migration,request,from,to,method,reason,state,tokens,stages,bytes,downtime_ms,started_trace_s,ended_trace_s,staged,why\n"
        for x in m.samples {
            s += "\(x.id),\(x.request ?? ""),\(x.from),\(x.to),\(x.method),\(x.reason),\(x.state),\(x.tokens),\(x.stages),\(x.bytes),"
            s += (x.downtimeMs.map { String(format: "%.3f", $0) } ?? "") + String(format: ",%.3f,%.3f,", x.started, x.ended) + (x.staged == true ? "yes" : "no")
            s += "," + csvField(x.detail ?? "") + "\n"
        }
        try s.write(toFile: file, atomically: true, encoding: .utf8)
    }

    /// The twin's migrations in the same columns (the twin moves no bytes: that column is 0).
    public static func write(twin records: [MigrationOutcome], method: String, to file: String) throws {
        var m = MigrationAccounting()
        m.samples = records.map { x in
            MigrationAccounting.Sample(id: x.id, tokens: x.tokens, downtimeMs: x.downtime.map { $0 * 1000 }, method: method, reason: x.reason, state: x.state,
                                       stages: x.stages, bytes: 0, from: x.from, to: x.to, started: x.started, ended: x.ended ?? -1, staged: x.staged, detail: x.detail, request: x.request)
        }
        try write(m, to: file)
    }

    /// The report's migration section: counts by reason and outcome, and downtime against the
    /// request's sequence length per method.
    static func section(_ s: ExperimentSummary, esc: (String) -> String) -> String {
        let m = s.migrations
        guard m.known, m.started > 0 || s.migrationPolicy != "none" else { return "" }
        var out = "<h2>Live migration</h2><p>Policy <b>\(esc(s.migrationPolicy))</b>, method \(esc(m.method)). Running requests move between replicas with their KV blocks as real bytes over the agents' data plane (every byte checked on arrival). Downtime is the extra stall a moved request saw: the gap between its last token on the source and its first on the destination, less its normal time between tokens (trace ms). "
            + m.notes.map(esc).joined(separator: " ") + "</p>"
        guard m.started > 0 else { return out + "<p>No migration was started.</p>" }
        out += "<table><tr><th>reason</th><th>migrations</th></tr>" + m.byReason.sorted { $0.key < $1.key }.map { "<tr><td>\(esc($0.key))</td><td>\($0.value)</td></tr>" }.joined() + "</table>"
        out += "<table><tr><th>outcome</th><th>migrations</th></tr>" + m.byState.sorted { $0.key < $1.key }.map { "<tr><td>\(esc($0.key))</td><td>\($0.value)</td></tr>" }.joined() + "</table>"
        out += String(format: "<p>%.1f MiB of KV moved", Double(m.bytesMoved) / 1_048_576)
            + (m.downtimeP50Ms.map { String(format: "; downtime p50 %.1f ms, p99 %.1f ms", $0, m.downtimeP99Ms ?? 0) } ?? "") + ".</p>"
        if m.staged > 0 {
            out += "<p>\(m.staged) migrations were staged through a memory host: their destination had no room, so the source put the request's KV on the host and the destination fetched it back once it had room. Their stall includes that wait"
                + (m.stagedStallP50Ms.map { String(format: " (p50 %.0f ms)", $0) } ?? "") + ", so they are left out of the downtime figures and plot.</p>"
        }
        var plot = SVGPlot(title: "Downtime against sequence length", xLabel: "tokens of the request when it moved", yLabel: "downtime, trace ms")
        for method in Set(m.samples.map(\.method)).sorted() {
            let pts = m.samples.filter { $0.method == method && $0.staged != true }.compactMap { x in x.downtimeMs.map { (Double(x.tokens), $0) } }
            if !pts.isEmpty { plot.series.append(SVGPlot.Series(name: method, points: pts.sorted { $0.0 < $1.0 }, dots: true)) }
        }
        if !plot.series.isEmpty { out += "<h3>Downtime against sequence length</h3>" + plot.render() }
        return out
    }
}

/// Runs of one spec that differ by migration policy, side by side: the table printed at the end
/// and `report.html` at the top of the results folder (each run's own report is in its folder).
/// With several runs of each policy (repetitions), each figure is the policy's mean over its runs,
/// its P99 TTFT's range over them is given, and the best policy is set against `none` run by run
/// (the same seed: the same requests), so a claim says whether it holds beyond the spread.
public enum ExperimentComparison {
    struct Row {
        var policy: String
        var seed: UInt64 = 0
        /// Runs this row stands for (a mean's).
        var runs = 1
        var ttftP50 = 0.0, ttftP99 = 0.0, tbtP50 = 0.0, tbtP99 = 0.0, latencyP50 = 0.0, latencyP99 = 0.0
        /// P99 TTFT's lowest and highest over the runs.
        var ttftP99Range: ClosedRange<Double>?
        var preemptions = 0.0, migrations = 0.0
        var completed = 0, submitted = 0
        var reasons: [String: Double] = [:]
        var staged = 0.0
        var downtimeP50: Double?
        var lostNothing = true
        var prefixHitRatio: Double?
        var tokensPerSecond: Double?
        var weightTier: String?
    }

    /// Per run, request-weighted over its services (one service: its own figures).
    static func rows(_ all: [ExperimentSummary]) -> [Row] {
        all.map { s in
            var r = Row(policy: s.variantLabel, seed: s.seed)
            let svc = s.requests.services
            let n = Double(max(1, svc.reduce(0) { $0 + $1.completed }))
            func w(_ f: (RequestAccounting.Service) -> Double) -> Double { svc.reduce(0) { $0 + f($1) * Double($1.completed) } / n }
            r.ttftP50 = w(\.ttftP50); r.ttftP99 = w(\.ttftP99); r.tbtP50 = w(\.tbtP50); r.tbtP99 = w(\.tbtP99)
            r.latencyP50 = w(\.latencyP50); r.latencyP99 = w(\.latencyP99)
            r.preemptions = Double(svc.reduce(0) { $0 + $1.preemptions })
            r.completed = svc.reduce(0) { $0 + $1.completed }; r.submitted = svc.reduce(0) { $0 + $1.submitted }
            r.migrations = Double(s.migrations.started); r.reasons = s.migrations.byReason.mapValues(Double.init); r.downtimeP50 = s.migrations.downtimeP50Ms
            r.staged = Double(s.migrations.staged)
            r.lostNothing = s.lostNothing.ok
            if s.offload.known && s.offload.prefixRequests > 0 { r.prefixHitRatio = s.offload.hitRatio }
            r.tokensPerSecond = s.requests.outputTokensPerSecond
            if let w = s.offload.weights, !w.isEmpty { r.weightTier = Set(w.map { $0.tier.isEmpty ? "none" : $0.tier }).sorted().joined(separator: "+") }
            return r
        }
    }

    /// Runs grouped by policy, in the order the policies first ran (each group in run order).
    static func byPolicy(_ rows: [Row]) -> [(policy: String, runs: [Row])] {
        var order: [String] = [], groups: [String: [Row]] = [:]
        for r in rows {
            if groups[r.policy] == nil { order.append(r.policy) }
            groups[r.policy, default: []].append(r)
        }
        return order.map { ($0, groups[$0]!) }
    }

    /// A policy's runs as one row: each figure's mean over them (counts too, so 2.5 migrations is
    /// a mean), requests summed, lost nothing only if no run lost anything.
    static func mean(_ runs: [Row]) -> Row {
        guard let first = runs.first else { return Row(policy: "-") }
        guard runs.count > 1 else { var r = first; r.ttftP99Range = first.ttftP99...first.ttftP99; return r }
        let n = Double(runs.count)
        func avg(_ f: (Row) -> Double) -> Double { runs.reduce(0) { $0 + f($1) } / n }
        func avgKnown(_ f: (Row) -> Double?) -> Double? {
            let xs = runs.compactMap(f)
            return xs.isEmpty ? nil : xs.reduce(0, +) / Double(xs.count)
        }
        var r = Row(policy: first.policy, seed: first.seed)
        r.runs = runs.count
        r.ttftP50 = avg(\.ttftP50); r.ttftP99 = avg(\.ttftP99); r.tbtP50 = avg(\.tbtP50); r.tbtP99 = avg(\.tbtP99)
        r.latencyP50 = avg(\.latencyP50); r.latencyP99 = avg(\.latencyP99)
        r.ttftP99Range = runs.map(\.ttftP99).min()!...runs.map(\.ttftP99).max()!
        r.preemptions = avg(\.preemptions); r.migrations = avg(\.migrations); r.staged = avg(\.staged)
        for k in Set(runs.flatMap { $0.reasons.keys }) { r.reasons[k] = avg { $0.reasons[k] ?? 0 } }
        r.completed = runs.reduce(0) { $0 + $1.completed }; r.submitted = runs.reduce(0) { $0 + $1.submitted }
        r.downtimeP50 = avgKnown(\.downtimeP50)
        r.lostNothing = runs.allSatisfy(\.lostNothing)
        r.prefixHitRatio = avgKnown(\.prefixHitRatio); r.tokensPerSecond = avgKnown(\.tokensPerSecond)
        let tiers = Set(runs.compactMap(\.weightTier))
        r.weightTier = tiers.isEmpty ? nil : tiers.sorted().joined(separator: "+")
        return r
    }

    /// A count as it reads best: whole when it is (one run, or runs that agree), else one decimal.
    static func count(_ x: Double) -> String {
        x == x.rounded() ? String(Int(x)) : String(format: "%.1f", x)
    }

    /// How the best policy's P99 TTFT compares with `none`'s over repeated runs: the ratio of the
    /// means, the ratio run by run where both ran the same seeds, and whether it holds beyond the
    /// runs' spread. Empty without repetitions (the single-run headline says it all then).
    static func overRuns(best: (policy: String, runs: [Row]), none: (policy: String, runs: [Row]), what: String) -> [String] {
        guard best.runs.count > 1 || none.runs.count > 1 else { return [] }
        let b = mean(best.runs), z = mean(none.runs)
        var lines = [String(format: "P99 TTFT, best %@ policy (%@) vs none, mean of %d and %d runs: %.2f s vs %.2f s, ratio %.2f (below 1: it helps)",
                            what as NSString, best.policy as NSString, best.runs.count, none.runs.count, b.ttftP99, z.ttftP99, z.ttftP99 > 0 ? b.ttftP99 / z.ttftP99 : .nan)]
        let bLo = b.ttftP99Range!.lowerBound, bHi = b.ttftP99Range!.upperBound, zLo = z.ttftP99Range!.lowerBound, zHi = z.ttftP99Range!.upperBound
        var verdict: String
        if bHi < zLo { verdict = "every \(best.policy) run beat every none run" }
        else if zHi < bLo { verdict = "every none run beat every \(best.policy) run" }
        else { verdict = "the ranges overlap" }
        let paired = best.runs.map(\.seed) == none.runs.map(\.seed)
        if paired {
            let ratios = zip(best.runs, none.runs).map { $0.ttftP99 / max($1.ttftP99, 1e-12) }
            let below = ratios.filter { $0 < 1 }.count
            lines.append("  run by run (same seed, same requests), \(best.policy) ÷ none: "
                         + zip(best.runs, ratios).map { String(format: "%.2f (seed %llu)", $1, $0.seed) }.joined(separator: ", ")
                         + "; below 1 in \(below) of \(ratios.count)")
            if verdict == "the ranges overlap" {
                verdict += below == ratios.count ? ", but it helped in every pair of runs" : below == 0 ? ", and it helped in no pair of runs" : ": not shown beyond the run-to-run spread"
            }
        } else if verdict == "the ranges overlap" {
            verdict += ": not shown beyond the run-to-run spread"
        }
        lines.append(String(format: "  P99 TTFT over the runs: %@ %.2f–%.2f s, none %.2f–%.2f s: ", best.policy as NSString, bLo, bHi, zLo, zHi) + verdict)
        return lines
    }

    /// The best policy against `none`: P99 TTFT (over repeated runs, with the run-by-run ratios and
    /// whether it holds beyond the spread) and P50 TTFT. Empty without `none` or another policy.
    static func headline(_ groups: [(policy: String, runs: [Row])], what: String) -> [String] {
        let rs = groups.map { mean($0.runs) }
        let repeated = groups.contains { $0.runs.count > 1 }
        guard let base = rs.first(where: { $0.policy == "none" }), base.ttftP99 > 0,
              let best = rs.filter({ $0.policy != "none" }).min(by: { $0.ttftP99 < $1.ttftP99 }) else { return [] }
        var lines = groups.first { $0.policy == best.policy }.flatMap { b in groups.first { $0.policy == "none" }.map { overRuns(best: b, none: $0, what: what) } } ?? []
        if lines.isEmpty {
            lines.append(String(format: "P99 TTFT, best %@ policy (%@) vs none: %.2f s vs %.2f s, ratio %.2f (below 1: it helps)",
                                what as NSString, best.policy as NSString, best.ttftP99, base.ttftP99, best.ttftP99 / base.ttftP99))
        }
        if let b50 = rs.filter({ $0.policy != "none" }).min(by: { $0.ttftP50 < $1.ttftP50 }), base.ttftP50 > 0 {
            lines.append(String(format: "P50 TTFT, best %@ policy (%@) vs none%@: %.2f s vs %.2f s, ratio %.2f",
                                what as NSString, b50.policy as NSString, (repeated ? ", means" : "") as NSString, b50.ttftP50, base.ttftP50, b50.ttftP50 / base.ttftP50))
        }
        return lines
    }

    /// `text` padded to `width`, or followed by one space when longer (never run into the next column).
    static func column(_ text: String, _ width: Int) -> String {
        text.count < width ? text.padding(toLength: width, withPad: " ", startingAt: 0) : text + " "
    }

    static func reasons(_ r: Row) -> String {
        r.reasons.sorted { $0.key < $1.key }.map { "\(count($0.value)) \($0.key)" }.joined(separator: ", ")
    }

    public static func text(_ all: [ExperimentSummary]) -> String {
        let groups = byPolicy(rows(all))
        let rs = groups.map { mean($0.runs) }
        let repeated = groups.contains { $0.runs.count > 1 }
        var lines: [String] = []
        if repeated {
            let seeds = Array(Set(all.map(\.seed))).sorted().map(String.init).joined(separator: ", ")
            lines.append("Each figure: the policy's mean over its runs (\(groups.map { "\($0.runs.count)" }.joined(separator: ", ")) runs; seeds \(seeds)).")
        }
        lines.append("policy     TTFT p50 s  TTFT p99 s  TBT p50 ms  TBT p99 ms  E2E p50 s  E2E p99 s  preemptions  migrations (by reason)                 lost nothing")
        for r in rs {
            let reasons = reasons(r) + (r.staged > 0 ? "; \(count(r.staged)) staged" : "")
            lines.append(r.policy.padding(toLength: 11, withPad: " ", startingAt: 0)
                         + String(format: "%-11.2f %-11.2f %-11.1f %-11.1f %-10.2f %-10.2f ", r.ttftP50, r.ttftP99, r.tbtP50 * 1000, r.tbtP99 * 1000, r.latencyP50, r.latencyP99)
                         + column(count(r.preemptions), 13)
                         + column("\(count(r.migrations))\(reasons.isEmpty ? "" : " (\(reasons))")", 39) + (r.lostNothing ? "yes" : "NO")
                         + (r.prefixHitRatio.map { String(format: "   prefix hits %.1f%% of prompt tokens", $0 * 100) } ?? "")
                         + (r.tokensPerSecond.map { String(format: "   %.2f output tok/s", $0) } ?? "")
                         + (r.weightTier.map { "   weights streamed from \($0)" } ?? ""))
        }
        if repeated {
            lines.append("P99 TTFT per run (seed): " + groups.map { g in
                g.policy + " " + g.runs.map { String(format: "%.2f (%llu)", $0.ttftP99, $0.seed) }.joined(separator: ", ")
            }.joined(separator: " | "))
        }
        lines += headline(groups, what: all.first?.variantKind ?? "migration")
        // Streamed weights: throughput per tier against the fastest.
        let streamed = rs.filter { $0.weightTier != nil && ($0.tokensPerSecond ?? 0) > 0 }
        if streamed.count > 1, let best = streamed.max(by: { $0.tokensPerSecond! < $1.tokensPerSecond! }) {
            lines.append("Output tokens/s with streamed weights: " + streamed.map {
                String(format: "%@ %.2f (%.2f× %@)", $0.policy as NSString, $0.tokensPerSecond!, $0.tokensPerSecond! / best.tokensPerSecond!, best.policy as NSString)
            }.joined(separator: ", "))
        }
        return lines.joined(separator: "\n")
    }

    /// The run folders of a comparison as `ExperimentRunner` names them: DIR/POLICY when the runs
    /// differ by policy, then run-I-seed-S when a policy ran more than once.
    static func runDirectories(_ all: [ExperimentSummary], in dir: String) -> [String] {
        let labels = all.map(\.variantLabel)
        let policies = Set(labels).count > 1
        let repeated = Dictionary(labels.map { ($0, 1) }, uniquingKeysWith: +).values.contains { $0 > 1 }
        var index: [String: Int] = [:]
        return all.map { s in
            var d = dir
            if policies { d += "/" + s.variantLabel }
            index[s.variantLabel, default: 0] += 1
            if repeated { d += "/run-\(index[s.variantLabel]!)-seed-\(s.seed)" }
            return d
        }
    }

    /// Rebuilds a comparison folder's `report.html` and `comparison.txt` from its `summary.json`
    /// (every run's summary) and each run's `requests.csv`; nil when DIR holds a single run, or
    /// runs of a workload without inference requests (no policy comparison: the runner writes none).
    public static func rebuild(directory dir: String) throws -> String? {
        guard let all = ExperimentSummary.loadAll(from: dir), all.count > 1, all.contains(where: { !$0.requests.services.isEmpty }) else { return nil }
        return try write(all, runDirectories: runDirectories(all, in: dir), to: dir, title: all[0].name)
    }

    /// `report.html` at the top of a multi-policy results folder: the comparison table and each
    /// policy's TTFT CDF from its runs' `requests.csv` (pooled over its runs).
    /// `runDirectories`: each run's folder, in the order of `all`.
    /// Returns the comparison as written to `comparison.txt` (the table's text, each run's
    /// load-balance line, and how its high-priority requests fared against the others).
    @discardableResult
    public static func write(_ all: [ExperimentSummary], runDirectories: [String], to dir: String, title: String) throws -> String {
        func esc(_ x: String) -> String { x.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;") }
        let groups = byPolicy(rows(all))
        let rs = groups.map { mean($0.runs) }
        let repeated = groups.contains { $0.runs.count > 1 }
        let kind = all.first?.variantKind ?? "migration"
        // Migration columns for migration policies; prefix hits and streamed weights for offload ones.
        let migrating = kind != "offload", weights = rs.contains { $0.weightTier != nil }
        var table = "<table><tr><th>policy</th>" + (repeated ? "<th>runs</th>" : "") + "<th>requests done</th><th>TTFT p50 s</th><th>TTFT p99 s</th>" + (repeated ? "<th>TTFT p99 range</th>" : "")
            + "<th>TBT p50 ms</th><th>TBT p99 ms</th><th>E2E p50 s</th><th>E2E p99 s</th><th>preemptions</th>"
            + (migrating ? "<th>migrations</th><th>by reason</th><th>downtime p50 ms</th>" : "<th>prefix hits (prompt tokens)</th>")
            + "<th>output tok/s</th>" + (weights ? "<th>weights from</th>" : "") + "<th>lost nothing</th></tr>"
        for r in rs {
            let range = r.ttftP99Range.map { String(format: "%.2f–%.2f", $0.lowerBound, $0.upperBound) } ?? "-"
            table += "<tr><td>\(esc(r.policy))</td>" + (repeated ? "<td>\(r.runs)</td>" : "") + "<td>\(r.completed)/\(r.submitted)</td>"
                + String(format: "<td>%.2f</td><td>%.2f</td>", r.ttftP50, r.ttftP99) + (repeated ? "<td>\(range)</td>" : "")
                + String(format: "<td>%.1f</td><td>%.1f</td><td>%.2f</td><td>%.2f</td>", r.tbtP50 * 1000, r.tbtP99 * 1000, r.latencyP50, r.latencyP99)
                + "<td>\(count(r.preemptions))</td>"
                + (migrating ? "<td>\(count(r.migrations))</td><td>\(esc(reasons(r)))</td><td>" + (r.downtimeP50.map { String(format: "%.1f", $0) } ?? "-") + "</td>"
                   : "<td>" + (r.prefixHitRatio.map { String(format: "%.1f%%", $0 * 100) } ?? "-") + "</td>")
                + "<td>" + (r.tokensPerSecond.map { String(format: "%.2f", $0) } ?? "-") + "</td>" + (weights ? "<td>\(esc(r.weightTier ?? "-"))</td>" : "")
                + "<td>\(r.lostNothing ? "yes" : "NO")</td></tr>"
        }
        table += "</table>"
        var cdf = SVGPlot(title: "Time to first token by \(kind) policy", xLabel: "TTFT, trace seconds (log)", yLabel: "fraction of requests", logX: true)
        var balance: [String] = [], priority: [String] = []
        var e2e = SVGPlot(title: "Request latency by \(kind) policy", xLabel: "latency, trace seconds (log)", yLabel: "fraction of requests", logX: true)
        var ttfts: [String: [Double]] = [:], lat: [String: [Double]] = [:]
        for (i, s) in all.enumerated() where i < runDirectories.count {
            guard let text = try? String(contentsOfFile: runDirectories[i] + "/requests.csv", encoding: .utf8) else { continue }
            let label = repeated ? "\(s.variantLabel) (seed \(s.seed))" : s.variantLabel
            // How evenly the policy's replicas made the tail wait (what migration could take away).
            let b = ReplicaBalance(ReplicaBalance.rows(csv: text))
            if b.tail != nil { balance.append(label + ": " + b.sentence) }
            if let p = PriorityClasses(PriorityClasses.rows(csv: text)) { priority.append(label + ": " + p.sentence) }
            // Columns by name, as the balance and priority readers take them.
            let lines = text.split(separator: "\n")
            let header = lines.first?.split(separator: ",").map(String.init) ?? []
            let t = header.firstIndex(of: "ttft_s"), l = header.firstIndex(of: "latency_s")
            for line in lines.dropFirst() {
                let c = line.split(separator: ",", omittingEmptySubsequences: false)
                if let t, c.count > t, let x = Double(c[t]), x >= 0 { ttfts[s.variantLabel, default: []].append(max(x, 1e-3)) }
                if let l, c.count > l, let x = Double(c[l]), x >= 0 { lat[s.variantLabel, default: []].append(max(x, 1e-3)) }
            }
        }
        func thin(_ p: [(Double, Double)]) -> [(Double, Double)] {
            guard let last = p.last else { return [] }
            let step = max(1, p.count / 400)
            return Swift.stride(from: 0, to: p.count, by: step).map { p[$0] } + [last]
        }
        for g in groups {
            if let t = ttfts[g.policy], !t.isEmpty { cdf.series.append(SVGPlot.Series(name: g.policy, points: thin(SVGPlot.cdf(t)))) }
            if let l = lat[g.policy], !l.isEmpty { e2e.series.append(SVGPlot.Series(name: g.policy, points: thin(SVGPlot.cdf(l)))) }
        }
        // Each run's P99 TTFT by seed: the spread a claim must clear, at a glance.
        var perRun = SVGPlot(title: "P99 TTFT of each run", xLabel: "seed (the same requests for every policy)", yLabel: "P99 TTFT, trace seconds")
        perRun.xMargin = 0.5
        perRun.wholeNumberX = true
        if repeated {
            for g in groups { perRun.series.append(SVGPlot.Series(name: g.policy, points: g.runs.map { (Double($0.seed), $0.ttftP99) }.sorted { $0.0 < $1.0 }, dots: true)) }
        }
        let claim = headline(groups, what: kind)
        let comparison = text(all) + (balance.isEmpty ? "" : "\n" + balance.joined(separator: "\n")) + (priority.isEmpty ? "" : "\n" + priority.joined(separator: "\n"))
        let links = zip(all, runDirectories).map { s, d in
            let rel = d.hasPrefix(dir + "/") ? String(d.dropFirst(dir.count + 1)) : d
            return "<a href=\"\(esc(rel))/report.html\">\(esc(repeated ? "\(s.variantLabel) (seed \(s.seed))" : s.variantLabel))</a>"
        }.joined(separator: " · ")
        let runsSentence = repeated
            ? "Each policy ran \(groups.map { "\($0.runs.count)" }.joined(separator: "/")) times, on the seeds listed; the table gives each figure's mean over a policy's runs and its P99 TTFT's range, and a policy is set against none run by run (same seed, same requests). The CDFs pool each policy's runs."
            : "The same requests (same seed) on the same testbed, once per policy."
        let html = """
        <!doctype html><html><head><meta charset="utf-8"><title>\(esc(title)): \(kind) policies</title>
        <style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#eee}pre{background:#f6f6f6;padding:8px;overflow-x:auto}</style></head><body>
        <h1>\(esc(title)): \(kind) policies compared</h1>
        <p>\(runsSentence) Policies: \(kind == "offload" ? (weights ? "the memory tier the model's offloaded layers are streamed from every step (DRAM, CXL (emulated), NVMe)" : "memory-tier offload (KV prefixes stored on and loaded from the memory hosts' DRAM, CXL (emulated) and NVMe tiers)") : "live migration"). Replicas are emulated (an iteration-level serving engine timed by Vidur's profiles); KV blocks move as real bytes at the stated kv_bytes_scale. Each run's own report: \(links).</p>
        \(claim.isEmpty ? "" : "<p><b>" + claim.map(esc).joined(separator: "<br>") + "</b></p>")
        \(table)
        \(perRun.series.isEmpty ? "" : "<h2>P99 TTFT of each run</h2>" + perRun.render())
        <pre>\(esc(comparison))</pre>
        \(cdf.series.isEmpty ? "" : "<h2>Time to first token</h2>" + cdf.render())
        \(e2e.series.isEmpty ? "" : "<h2>End-to-end latency</h2>" + e2e.render())
        </body></html>
        """
        try html.write(toFile: dir + "/report.html", atomically: true, encoding: .utf8)
        try (comparison + "\n").write(toFile: dir + "/comparison.txt", atomically: true, encoding: .utf8)
        return comparison
    }
}

/// One CSV field: quoted (inner quotes doubled) when it holds a comma, a quote or a line break.
func csvField(_ s: String) -> String {
    guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
    return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}
