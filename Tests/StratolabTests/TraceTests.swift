import Cluster
import Experiments
import Foundation
import Protocol
import Testing

@Suite("Tracing: recorder, spool, merge and Chrome export", .serialized)
struct TraceTests {
    func event(_ seq: UInt64, _ phase: TracePhase, _ name: String, ts: Int64, track: String = "control", flow: UInt64 = 0,
               args: [String: String] = [:], values: [String: Double] = [:]) -> TraceEvent {
        var e = TraceEvent()
        e.seq = seq; e.phase = phase; e.name = name; e.tsUnixNanos = ts; e.track = track; e.flowID = flow
        e.category = phase == .counter ? "counter" : (args["edge"] != nil ? "fault" : "message")
        e.args = args; e.values = values
        if phase == .span { e.durationNanos = 1_000_000 }
        return e
    }

    func batch(_ process: String, _ instance: String, _ events: [TraceEvent], offset: Int64? = nil, error: Int64 = 0) -> TraceBatch {
        var b = TraceBatch()
        b.process = process; b.instance = instance; b.events = events
        if let o = offset { var c = ClockEstimate(); c.offsetNanos = o; c.errorBoundNanos = error; c.samples = 3; b.clock = c }
        return b
    }

    @Test("the recorder numbers events without gaps, spools every batch it hands out, and re-sends until acknowledged")
    func recorder() throws {
        let dir = NSTemporaryDirectory() + "strato-tracer-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let t = Tracer()
        t.instant("before enable", category: "x")          // disabled: dropped
        try t.enable(process: "node-a", spoolDirectory: dir)
        for i in 0..<5 { t.instant("e\(i)", category: "x") }
        let b1 = try #require(t.takeBatch(max: 3, nowMono: 0, clock: nil))
        #expect(b1.events.map(\.seq) == [1, 2, 3])
        let b2 = try #require(t.takeBatch(max: 3, nowMono: 1, clock: nil))
        #expect(b2.events.map(\.seq) == [4, 5])
        #expect(t.takeBatch(nowMono: 2, clock: nil) == nil)
        #expect(t.unacknowledged == 5)
        // No ack for 2 s: the oldest batch goes again.
        let again = try #require(t.takeBatch(nowMono: 2_000_000_000, clock: nil))
        #expect(again.events.map(\.seq) == [1, 2, 3])
        var ack = TraceBatchAck(); ack.instance = b1.instance; ack.throughSeq = 3
        t.acknowledge(ack)
        #expect(t.unacknowledged == 2)
        ack.throughSeq = 5
        t.acknowledge(ack)
        #expect(t.unacknowledged == 0)
        t.disable()
        // The spool holds every batch handed out (once), readable after the process is gone.
        let files = try FileManager.default.contentsOfDirectory(atPath: dir)
        #expect(files.count == 1 && files[0].hasPrefix("node-a-"))
        let (batches, truncated) = try TraceSpool.read(file: dir + "/" + files[0])
        #expect(!truncated)
        #expect(batches.flatMap(\.events).map(\.seq) == [1, 2, 3, 4, 5])
    }

    @Test("a spool cut mid-record keeps every whole record before the cut")
    func truncatedSpool() {
        var data = TraceSpool.frame(batch("p", "i", [event(1, .instant, "a", ts: 1)]))
        data += TraceSpool.frame(batch("p", "i", [event(2, .instant, "b", ts: 2)]))
        let whole = TraceSpool.read(data)
        #expect(whole.batches.count == 2 && !whole.truncated)
        let cut = TraceSpool.read(data.prefix(data.count - 3))
        #expect(cut.batches.count == 1 && cut.truncated)
        #expect(TraceSpool.read(Data([0xff, 0xff])).truncated)
    }

    /// Two agents and a coordinator; one batch arrived twice, one only in a spool, one sequence gap.
    func sample() -> MergedTrace {
        let co = batch("coordinator", "c1", [
            event(1, .flowIn, "heartbeat", ts: 1_000_500_000, flow: 42),
            event(2, .span, "handle heartbeat", ts: 1_000_500_000),
            event(3, .counter, "nodes", ts: 1_001_000_000, track: "workload", values: ["alive": 2, "dead": 0]),
            event(4, .instant, "kill start", ts: 1_002_000_000, track: "faults", args: ["edge": "start", "fault_id": "f1", "action": "kill", "target": "a"]),
            event(5, .instant, "kill end", ts: 1_004_000_000, track: "faults", args: ["edge": "end", "fault_id": "f1", "action": "kill", "target": "a"]),
            event(6, .counter, "nodes", ts: 1_005_000_000, track: "workload", values: ["alive": 1, "dead": 1]),
        ])
        // Agent a's clock is 1 ms behind the coordinator's: offset +1 ms.
        let a1 = batch("a", "a1", [event(1, .span, "send heartbeat", ts: 999_400_000), event(2, .flowOut, "heartbeat", ts: 999_400_000, flow: 42)], offset: 1_000_000, error: 50_000)
        let a2 = batch("a", "a1", [event(3, .counter, "process", ts: 1_000_000_000, track: "counters", values: ["cpu_percent": 3])], offset: 1_000_000, error: 20_000)
        let b = batch("b", "b1", [event(1, .instant, "registered", ts: 1_000_000_000), event(3, .instant, "lost coordinator", ts: 1_003_000_000),
                                  event(4, .flowOut, "register", ts: 1_003_000_000, flow: 77)])
        var m = MergedTrace()
        m.build([(co, false), (a1, false), (a1, false), (a2, true), (b, false)])
        return m
    }

    @Test("merge: duplicates dropped, gaps counted, spool-only events counted, clocks aligned, fault windows paired")
    func merge() throws {
        let m = sample()
        #expect(m.duplicatesDropped == 2)
        let byProcess = Dictionary(uniqueKeysWithValues: m.instances.map { ($0.process, $0) })
        #expect(byProcess["b"]?.missing == 1)                  // seq 2 never arrived
        #expect(byProcess["a"]?.missing == 0 && byProcess["a"]?.fromSpoolOnly == 1)
        #expect(byProcess["a"]?.errorBoundNanos == 20_000)     // the best estimate wins
        #expect(byProcess["coordinator"]?.errorBoundNanos == 0)
        #expect(m.missingEvents == 1)
        // Agent a's send at 999.4 ms on its clock is 1000.4 ms on the coordinator's: before the receive.
        let send = try #require(m.events.first { $0.process == "a" && $0.event.phase == .flowOut })
        let recv = try #require(m.events.first { $0.process == "coordinator" && $0.event.phase == .flowIn })
        #expect(send.event.tsUnixNanos == 1_000_400_000 && send.event.tsUnixNanos < recv.event.tsUnixNanos)
        #expect(m.faults.count == 1 && m.faults[0].startNanos == 1_002_000_000 && m.faults[0].endNanos == 1_004_000_000)
        #expect(zip(m.events, m.events.dropFirst()).allSatisfy { $0.0.event.tsUnixNanos <= $0.1.event.tsUnixNanos })
    }

    @Test("the Chrome trace is valid JSON: named processes, paired flows only, counters, fault windows")
    func chrome() throws {
        let m = sample()
        let dir = NSTemporaryDirectory() + "strato-chrome-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stats = try TraceExport.writeChrome(m, title: "t", to: dir + "/trace.json")
        let json = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/trace.json"))) as? [String: Any])
        let events = try #require(json["traceEvents"] as? [[String: Any]])
        let names = events.filter { $0["ph"] as? String == "M" && $0["name"] as? String == "process_name" }
            .compactMap { ($0["args"] as? [String: Any])?["name"] as? String }
        #expect(Set(names) == ["faults", "coordinator", "a", "b"])
        #expect(stats.flows == 1 && stats.unmatchedFlowEnds == 1)   // b's register has no receiver here
        let s = events.filter { $0["ph"] as? String == "s" }, f = events.filter { $0["ph"] as? String == "f" }
        #expect(s.count == 1 && f.count == 1 && s[0]["id"] as? String == f[0]["id"] as? String && s[0]["pid"] as? Int != f[0]["pid"] as? Int)
        #expect(events.filter { $0["ph"] as? String == "C" }.count == 3)
        let windows = events.filter { $0["cat"] as? String == "fault" && $0["ph"] as? String == "X" }
        #expect(windows.count == 1 && (windows[0]["dur"] as? NSNumber)?.doubleValue == 2000)   // 2 ms in µs
        for e in events where e["ph"] as? String != "M" {
            #expect(e["ts"] is NSNumber && e["pid"] is NSNumber && e["tid"] is NSNumber, "\(e)")
        }
        let meta = try #require(json["metadata"] as? [String: Any])
        #expect((meta["missing_events"] as? Int) == 1)
        try TraceExport.writeMetrics(m, to: dir)
        let csv = try String(contentsOfFile: dir + "/metrics.csv", encoding: .utf8)
        #expect(csv.hasPrefix("time_s,node,counter,metric,value\n"))
        #expect(csv.contains(",coordinator,nodes,alive,2.0") && csv.contains(",a,process,cpu_percent,3.0"))
        #expect(FileManager.default.fileExists(atPath: dir + "/metrics/coordinator.csv"))
    }
}
