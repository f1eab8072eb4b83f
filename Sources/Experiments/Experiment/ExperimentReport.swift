import Foundation
import Protocol
import Scheduling

/// Builds an experiment's outputs from its raw files: `trace.json`, `metrics.csv`,
/// `metrics/<node>.csv`, the trace half of `summary.json` with the lost-nothing check, and
/// `report.html`. The runner calls it after collecting; `strato report DIR` calls it again.
public enum ExperimentReport {
    /// `trace.json` and metrics only (`strato trace merge DIR`): from DIR/raw/trace of a results
    /// folder, or from DIR itself (a testbed run directory).
    @discardableResult
    public static func mergeTrace(directory dir: String, title: String) throws -> (MergedTrace, TraceExport.Stats) {
        let source = FileManager.default.fileExists(atPath: dir + "/raw/trace") ? dir + "/raw/trace" : dir
        let merged = try MergedTrace.load(directory: source)
        let stats = try TraceExport.writeChrome(merged, title: title, to: dir + "/trace.json")
        try TraceExport.writeMetrics(merged, to: dir)
        return (merged, stats)
    }

    @discardableResult
    public static func build(directory dir: String, title: String? = nil, include: Set<String> = ExperimentSpec.outputNames) throws -> ExperimentSummary {
        var summary = try ExperimentSummary.load(from: dir)
        let name = title ?? summary.name
        let merged = try MergedTrace.load(directory: dir + "/raw/trace")
        var stats: TraceExport.Stats
        if include.contains("trace") {
            stats = try TraceExport.writeChrome(merged, title: name, to: dir + "/trace.json")
        } else {
            stats = TraceExport.chromeJSON(merged, title: name).stats
        }
        if include.contains("metrics") { try TraceExport.writeMetrics(merged, to: dir) }
        var t = ExperimentSummary.TraceAccounting()
        t.events = merged.events.count
        t.processes = stats.processes
        t.instances = merged.instances.count
        t.missingEvents = merged.missingEvents
        t.fromSpoolOnly = merged.instances.reduce(0) { $0 + $1.fromSpoolOnly }
        t.duplicatesDropped = merged.duplicatesDropped
        t.flows = stats.flows
        t.counters = stats.counters
        t.truncatedFiles = merged.truncatedFiles
        t.nodesWithoutTrace = summary.expectedProcesses.filter { !stats.processes.contains($0) }
        t.maxClockErrorMs = merged.instances.compactMap(\.errorBoundNanos).max().map { Double($0) / 1e6 }
        summary.trace = t
        summary.faultWindows = merged.faults
        summary.check()
        try summary.save(to: dir)
        if include.contains("report") {
            try html(summary, merged, dir: dir).write(toFile: dir + "/report.html", atomically: true, encoding: .utf8)
        }
        return summary
    }

    static func html(_ s: ExperimentSummary, _ t: MergedTrace, dir: String) -> String {
        let samples = TraceExport.samples(t)
        let t0 = t.startNanos
        let shaded = t.faults.map { f in
            (Double(f.startNanos - t0) / 1e9, Double((f.endNanos ?? t.endNanos) - t0) / 1e9, "\(f.action) \(f.target)")
        }
        func plot(_ title: String, _ y: String, scale: Double = 1, _ pick: (TraceExport.Sample) -> String?) -> String {
            var groups: [String: [(Double, Double)]] = [:]
            for x in samples { if let k = pick(x) { groups[k, default: []].append((x.t, x.value * scale)) } }
            guard !groups.isEmpty else { return "" }
            var p = SVGPlot(title: title, xLabel: "seconds since the trace started", yLabel: y)
            p.series = groups.keys.sorted().map { SVGPlot.Series(name: $0, points: groups[$0]!.sorted { $0.0 < $1.0 }) }
            p.shaded = shaded
            return "<h3>\(title)</h3>" + p.render()
        }
        var plots = ""
        plots += plot("Nodes by state (coordinator's view)", "nodes") { $0.process == "coordinator" && $0.counter == "nodes" ? $0.metric : nil }
        plots += plot("Jobs by phase", "jobs") { $0.process == "coordinator" && $0.counter == "jobs" ? $0.metric : nil }
        plots += plot("Migrations by state", "migrations") { $0.process == "coordinator" && $0.counter == "migrations" ? $0.metric : nil }
        plots += plot("GPU utilisation per node (emulated)", "mean utilisation") { $0.metric == "gpu_utilization" ? $0.counter : nil }
        plots += plot("CPU per process", "% of one core") { $0.counter == "process" && $0.metric == "cpu_percent" ? $0.process : nil }
        plots += plot("Control traffic sent per process (cumulative)", "KiB", scale: 1.0 / 1024) { x in
            x.counter == "process" && x.metric == "bytes_sent" ? x.process : nil
        }
        plots += plot("Heartbeats handled by the coordinator", "per second") { $0.process == "coordinator" && $0.metric == "heartbeats_per_s" ? "heartbeats/s" : nil }
        if let cdf = try? String(contentsOfFile: dir + "/scheduling/jct_cdf.svg", encoding: .utf8) {
            plots += "<h3>Job completion time CDF</h3>" + cdf
        }
        func esc(_ x: String) -> String {
            x.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        }
        let services = servicesSection(s, dir: dir, esc: esc) + MigrationsTable.section(s, esc: esc) + OffloadSection.html(s, esc: esc)
            + (s.game.map { GameSection.html($0, shaded: shaded, offset: Double($0.startUnixNanos - t0) / 1e9, esc: esc) } ?? "")
        var faults = "<table><tr><th>fault</th><th>target</th><th>start s</th><th>end s</th></tr>"
        for f in t.faults {
            faults += "<tr><td>\(esc(f.action))</td><td>\(esc(f.target))</td><td>" + String(format: "%.1f", Double(f.startNanos - t0) / 1e9) + "</td><td>"
                + (f.endNanos.map { String(format: "%.1f", Double($0 - t0) / 1e9) } ?? "open") + "</td></tr>"
        }
        faults += "</table>"
        var clocks = "<table><tr><th>process</th><th>instance</th><th>host</th><th>events</th><th>missing</th><th>spool only</th><th>offset ms</th><th>± ms</th></tr>"
        for i in t.instances {
            clocks += "<tr><td>\(esc(i.process))</td><td>\(i.instance)</td><td>\(esc(i.host))</td><td>\(i.events)</td><td>\(i.missing)</td><td>\(i.fromSpoolOnly)</td><td>"
                + String(format: "%.3f", Double(i.offsetNanos) / 1e6) + "</td><td>" + (i.errorBoundNanos.map { String(format: "%.3f", Double($0) / 1e6) } ?? "?") + "</td></tr>"
        }
        clocks += "</table>"
        let check = "<p><b>Lost-nothing check: \(s.lostNothing.ok ? "passed" : "FAILED")</b></p><ul>" + s.lostNothing.lines.map { "<li>\(esc($0))</li>" }.joined() + "</ul>"
        return """
        <!doctype html><html><head><meta charset="utf-8"><title>\(esc(s.name))</title>
        <style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}pre{background:#f6f6f6;padding:8px;overflow-x:auto}</style></head><body>
        <h1>Experiment \(esc(s.name))</h1>
        <p>Seed \(s.seed) on \(esc(s.platform)), started \(ISO8601DateFormatter().string(from: s.startedAt)); workload \(esc(s.workload)), policy \(esc(s.policy))\(s.migrationPolicy.isEmpty ? "" : ", migration policy " + esc(s.migrationPolicy))\(s.offloadPolicy.isEmpty ? "" : ", offload policy " + esc(s.offloadPolicy)), time scale \(fmt(s.timeScale))×; ended by \(esc(s.endReason)).</p>
        \(s.emulated ? "<p><b>Emulation:</b> GPUs and job execution are emulated from published measurements (VectorLM, Gavel, Vidur); latency, jitter and loss are emulated in Stratolab's transport. The processes, messages, faults and timings are real.</p>" : "")
        <h2>Summary</h2>
        <pre>\(esc(ExperimentSummary.table([s])))</pre>
        \(check)
        \(services)
        <h2>Over time</h2>
        <p>Shaded: fault windows. Open <code>trace.json</code> in <a href="https://ui.perfetto.dev">ui.perfetto.dev</a> for every event, message flow and counter.</p>
        \(plots)
        <h2>Faults</h2>
        \(faults)
        <h2>Trace: processes and clocks</h2>
        <p>Timestamps are on the coordinator's clock; each process's offset and its error bound (half the round trip of the best sample).</p>
        \(clocks)
        <h2>Fault log</h2><pre>\(esc(s.faultLog.joined(separator: "\n")))</pre>
        </body></html>
        """
    }

    /// Online services: a table per service, the request latency CDF against the SLO, and the p99
    /// latency per minute of arrivals (where faults show). Empty without requests.
    static func servicesSection(_ s: ExperimentSummary, dir: String, esc: (String) -> String) -> String {
        guard !s.requests.services.isEmpty else { return "" }
        var out = "<h2>Inference services</h2><p>Replicas are emulated: an iteration-level serving engine (continuous batching, paged KV blocks, chunked prefill) timed by Vidur's operator profiles; requests, routing, sockets and faults are real. Latency is from a request's arrival to its last token, TTFT to its first, in trace seconds; TBT is a request's mean time between tokens. "
            + (s.requests.kvBytesScale > 0 ? String(format: "Replicas hold their KV blocks as real bytes at kv_bytes_scale 1/%.0f of the real size.", 1 / s.requests.kvBytesScale) : "Replicas hold no KV bytes (kv_bytes_scale 0).")
            + "</p>"
        out += "<table><tr><th>service</th><th>capacity req/s per replica</th><th>batch</th><th>requests</th><th>completed</th><th>within SLO</th><th>SLO s</th><th>p50 s</th><th>p99 s</th><th>TTFT p50 s</th><th>TTFT p99 s</th><th>TBT p99 ms</th><th>sent again</th><th>replica starts</th></tr>"
        for v in s.requests.services {
            out += "<tr><td>\(esc(v.id))</td><td>" + String(format: "%.2f", v.capacityRPS) + "</td><td>\(v.batch)</td><td>\(v.submitted)</td><td>\(v.completed)</td><td>"
                + String(format: "%.1f %%", v.sloAttainment * 100) + "</td><td>\(fmt(v.sloSeconds))</td><td>" + String(format: "%.2f", v.latencyP50)
                + "</td><td>" + String(format: "%.2f", v.latencyP99) + "</td><td>" + String(format: "%.2f</td><td>%.2f</td><td>%.0f", v.ttftP50, v.ttftP99, v.tbtP99 * 1000)
                + "</td><td>\(v.redispatched)</td><td>\(v.replicaStarts)</td></tr>"
        }
        out += "</table>"
        guard let text = try? String(contentsOfFile: dir + "/requests.csv", encoding: .utf8) else { return out }
        var latencies: [String: [Double]] = [:], ttfts: [String: [Double]] = [:], perMinute: [String: [Int: [Double]]] = [:]
        for line in text.split(separator: "\n").dropFirst() {
            let c = line.split(separator: ",", omittingEmptySubsequences: false)
            guard c.count >= 7, let arrival = Double(c[2]), let latency = Double(c[6]), latency >= 0 else { continue }
            let svc = String(c[1])
            latencies[svc, default: []].append(latency)
            if c.count >= 13, let t = Double(c[12]), t >= 0 { ttfts[svc, default: []].append(t) }
            perMinute[svc, default: [:]][Int(arrival / 60), default: []].append(latency)
        }
        guard !latencies.isEmpty else { return out }
        var cdf = SVGPlot(title: "Request latency CDF", xLabel: "latency, trace seconds (log)", yLabel: "fraction of requests", logX: true)
        for k in latencies.keys.sorted() {
            let points = SVGPlot.cdf(latencies[k]!)
            let step = max(1, points.count / 400)   // a few hundred points draw the curve
            cdf.series.append(SVGPlot.Series(name: k, points: Swift.stride(from: 0, to: points.count, by: step).map { points[$0] } + [points.last!]))
        }
        if let slo = s.requests.services.first?.sloSeconds { cdf.series.append(SVGPlot.Series(name: "SLO \(fmt(slo)) s", points: [(slo, 0), (slo, 1)])) }
        var p99 = SVGPlot(title: "p99 request latency per minute of arrivals", xLabel: "arrival, trace minutes", yLabel: "p99 latency, trace seconds")
        for k in perMinute.keys.sorted() {
            p99.series.append(SVGPlot.Series(name: k, points: perMinute[k]!.keys.sorted().map { m in
                (Double(m), percentile(perMinute[k]![m]!.sorted(), 99))
            }))
        }
        var ttftCDF = SVGPlot(title: "Time to first token CDF", xLabel: "TTFT, trace seconds (log)", yLabel: "fraction of requests", logX: true)
        for k in ttfts.keys.sorted() {
            let points = SVGPlot.cdf(ttfts[k]!.map { max($0, 1e-3) })
            let step = max(1, points.count / 400)
            ttftCDF.series.append(SVGPlot.Series(name: k, points: Swift.stride(from: 0, to: points.count, by: step).map { points[$0] } + [points.last!]))
        }
        return out + "<h3>Request latency CDF</h3>" + cdf.render() + (ttfts.isEmpty ? "" : "<h3>Time to first token</h3>" + ttftCDF.render())
            + "<h3>p99 latency over time</h3>" + p99.render() + balanceSection(csv: text, services: latencies.keys.sorted(), esc: esc) + prioritySection(csv: text)
    }

    /// Per service with two replicas or more: each replica's median TTFT per minute of arrivals,
    /// and how far apart they were when the tail formed (what migration could take away).
    static func balanceSection(csv: String, services: [String], esc: (String) -> String) -> String {
        var out = ""
        for svc in services {
            let b = ReplicaBalance(ReplicaBalance.rows(csv: csv, service: svc))
            guard !b.windows.isEmpty else { continue }
            var plot = SVGPlot(title: "\(svc): median TTFT per replica, per minute of arrivals", xLabel: "arrival, trace minutes", yLabel: "median TTFT, trace seconds")
            for (name, points) in b.series { plot.series.append(SVGPlot.Series(name: name, points: points)) }
            out += "<h3>Load balance across replicas: \(esc(svc))</h3><p>\(esc(b.sentence))</p>" + plot.render()
        }
        return out
    }

    /// High-priority requests against the others (when the spec draws some: `priority_share`).
    static func prioritySection(csv: String) -> String {
        guard let p = PriorityClasses(PriorityClasses.rows(csv: csv)) else { return "" }
        func row(_ name: String, _ c: PriorityClasses.Class) -> String {
            "<tr><td>\(name)</td><td>\(c.requests)</td>" + String(format: "<td>%.2f</td><td>%.2f</td><td>%.0f</td><td>%.2f</td></tr>", c.ttftP50, c.ttftP99, c.tbtP99 * 1000, c.maxTBTP99)
        }
        return "<h3>High-priority requests</h3><p>The migration policies keep KV headroom for each high-priority request (and move others away to make it); how each class fared. TBT is each request's mean time between tokens; the longest gap is its longest stall (a preemption or a move).</p>"
            + "<table><tr><th>class</th><th>requests answered</th><th>TTFT p50 s</th><th>TTFT p99 s</th><th>TBT p99 ms</th><th>longest gap p99 s</th></tr>"
            + row("high priority", p.high) + row("normal", p.normal) + "</table>"
    }
}
