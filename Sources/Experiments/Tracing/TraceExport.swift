import Foundation
import Protocol

/// Writes a merged trace as Chrome trace-event JSON (opens in ui.perfetto.dev and chrome://tracing)
/// and counters as CSV.
///
/// Layout: one process per node (named), one thread per track ("control", "jobs", "decisions",
/// "counters"…); messages are flows from the sender's "send" slice to the receiver's "recv"/"handle"
/// slice; counters are counter tracks; fault windows are slices on the "faults" process, so they
/// line up under every node.
public enum TraceExport {
    public struct Stats: Codable, Equatable {
        public var events: Int
        public var processes: [String]
        public var flows: Int
        public var unmatchedFlowEnds: Int
        public var counters: Int
        public var faultWindows: Int
    }

    public static func chromeJSON(_ t: MergedTrace, title: String) -> (json: [String: Any], stats: Stats) {
        let t0 = t.startNanos
        func us(_ ns: Int64) -> Double { Double(ns - t0) / 1000 }
        var out: [[String: Any]] = []
        // Processes: pid 1 for faults, then nodes in name order (the coordinator first).
        let names = Array(Set(t.events.map(\.process))).sorted { a, b in
            if (a == "coordinator") != (b == "coordinator") { return a == "coordinator" }
            return a < b
        }
        var pid: [String: Int] = [:]
        for (i, n) in names.enumerated() { pid[n] = i + 2 }
        out.append(["ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": ["name": "faults"]])
        out.append(["ph": "M", "name": "process_sort_index", "pid": 1, "tid": 0, "args": ["sort_index": 0]])
        for n in names {
            out.append(["ph": "M", "name": "process_name", "pid": pid[n]!, "tid": 0, "args": ["name": n]])
            out.append(["ph": "M", "name": "process_sort_index", "pid": pid[n]!, "tid": 0, "args": ["sort_index": pid[n]!]])
        }
        var tid: [String: Int] = [:]
        func thread(_ process: String, _ track: String) -> Int {
            let key = process + "\u{1}" + track
            if let t = tid[key] { return t }
            let id = tid.count + 1
            tid[key] = id
            out.append(["ph": "M", "name": "thread_name", "pid": pid[process]!, "tid": id, "args": ["name": track.isEmpty ? "main" : track]])
            return id
        }
        // Flows only where both ends were recorded (a sampled-out or lost end would dangle).
        var outs = Set<UInt64>(), ins = Set<UInt64>()
        for (_, e) in t.events {
            if e.phase == .flowOut { outs.insert(e.flowID) }
            if e.phase == .flowIn { ins.insert(e.flowID) }
        }
        let paired = outs.intersection(ins)
        var stats = Stats(events: 0, processes: names, flows: paired.count, unmatchedFlowEnds: outs.symmetricDifference(ins).count,
                          counters: 0, faultWindows: t.faults.count)
        for (process, e) in t.events {
            let p = pid[process]!, th = thread(process, e.track)
            var args: [String: Any] = e.args
            switch e.phase {
            case .span:
                out.append(["ph": "X", "name": e.name, "cat": e.category, "pid": p, "tid": th, "ts": us(e.tsUnixNanos),
                            "dur": max(0.001, Double(e.durationNanos) / 1000), "args": args])
            case .instant:
                out.append(["ph": "i", "s": "t", "name": e.name, "cat": e.category, "pid": p, "tid": th, "ts": us(e.tsUnixNanos), "args": args])
            case .counter:
                stats.counters += 1
                for (k, v) in e.values { args[k] = v }
                out.append(["ph": "C", "name": e.name, "cat": e.category, "pid": p, "tid": th, "ts": us(e.tsUnixNanos), "args": args])
            case .flowOut where paired.contains(e.flowID):
                out.append(["ph": "s", "name": e.name, "cat": "message", "id": String(e.flowID, radix: 16), "pid": p, "tid": th, "ts": us(e.tsUnixNanos)])
            case .flowIn where paired.contains(e.flowID):
                out.append(["ph": "f", "bp": "e", "name": e.name, "cat": "message", "id": String(e.flowID, radix: 16), "pid": p, "tid": th, "ts": us(e.tsUnixNanos)])
            default:
                continue
            }
            stats.events += 1
        }
        let end = t.endNanos
        for (i, f) in t.faults.enumerated() {
            out.append(["ph": "M", "name": "thread_name", "pid": 1, "tid": i + 1, "args": ["name": "\(f.action) \(f.target)"]])
            out.append(["ph": "X", "name": "\(f.action) \(f.target)", "cat": "fault", "pid": 1, "tid": i + 1, "ts": us(f.startNanos),
                        "dur": Double((f.endNanos ?? end) - f.startNanos) / 1000,
                        "args": ["fault_id": f.id, "detail": f.detail, "healed": f.endNanos != nil]])
        }
        var offsets: [String: Any] = [:]
        for i in t.instances {
            offsets["\(i.process)#\(i.instance)"] = ["process": i.process, "pid": i.pid, "host": i.host, "offset_ns": i.offsetNanos,
                                                     "error_bound_ns": i.errorBoundNanos.map { $0 as Any } ?? NSNull(),
                                                     "events": i.events, "missing": i.missing, "from_spool_only": i.fromSpoolOnly]
        }
        let json: [String: Any] = [
            "traceEvents": out,
            "displayTimeUnit": "ms",
            "metadata": ["title": title, "generator": "stratolab", "start_unix_nanos": t0,
                         "clock": "all timestamps on the coordinator's clock (each process's offset and its error bound below)",
                         "instances": offsets, "missing_events": t.missingEvents, "duplicates_dropped": t.duplicatesDropped,
                         "truncated_files": t.truncatedFiles]]
        return (json, stats)
    }

    public static func writeChrome(_ t: MergedTrace, title: String, to path: String) throws -> Stats {
        let (json, stats) = chromeJSON(t, title: title)
        let data = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
        try data.write(to: URL(fileURLWithPath: path))
        return stats
    }

    /// A counter sample, flattened: (seconds since the trace start, process, counter, metric, value).
    public struct Sample: Equatable {
        public var t: Double
        public var process: String
        public var counter: String
        public var metric: String
        public var value: Double
    }

    public static func samples(_ t: MergedTrace) -> [Sample] {
        let t0 = t.startNanos
        var out: [Sample] = []
        for (p, e) in t.events where e.phase == .counter {
            for (k, v) in e.values.sorted(by: { $0.key < $1.key }) {
                out.append(Sample(t: Double(e.tsUnixNanos - t0) / 1e9, process: p, counter: e.name, metric: k, value: v))
            }
        }
        return out
    }

    /// `metrics.csv` (every process, long form) and `metrics/<process>.csv` (one per node, wide).
    public static func writeMetrics(_ t: MergedTrace, to dir: String) throws {
        let all = samples(t)
        var csv = "time_s,node,counter,metric,value\n"
        for s in all { csv += String(format: "%.3f,", s.t) + "\(s.process),\(s.counter),\(s.metric),\(s.value)\n" }
        try csv.write(toFile: dir + "/metrics.csv", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: dir + "/metrics", withIntermediateDirectories: true)
        for (process, rows) in Dictionary(grouping: all, by: \.process) {
            let columns = Array(Set(rows.map { "\($0.counter).\($0.metric)" })).sorted()
            var byTime: [Double: [String: Double]] = [:]
            for r in rows { byTime[r.t, default: [:]]["\(r.counter).\(r.metric)"] = r.value }
            var w = "time_s," + columns.joined(separator: ",") + "\n"
            for time in byTime.keys.sorted() {
                w += String(format: "%.3f", time) + "," + columns.map { byTime[time]![$0].map { "\($0)" } ?? "" }.joined(separator: ",") + "\n"
            }
            try w.write(toFile: "\(dir)/metrics/\(process).csv", atomically: true, encoding: .utf8)
        }
    }
}
