import Cluster
import Experiments
import Foundation
import Protocol
import RenderAgent

/// `strato bench trace`: how many events a process can record and ship, and what tracing costs a
/// workload, measured in one run.
///
/// 1. Record rate: one thread records events into a recorder that spools every batch to disk
///    (what each process does), and hands batches out as the shipper would.
/// 2. Overhead: a coordinator process (the collector) and, in this process, an agent session
///    shipping trace batches over ZeroMQ every 250 ms, while this thread runs a CPU-bound workload
///    (hashing `stepBytes` per step, 64 KiB by default: ~15,000 steps and so events a second, far above what an agent records in use) that records one span per step. Runs alternate tracing off and on,
///    and the overhead is 1 − (steps/s on ÷ steps/s off), median over the pairs.
public enum TraceBench {
    public struct Result {
        public var recordEventsPerSecond: Double
        public var recordBytesPerEvent: Double
        public var stepsOff: [Double]
        public var stepsOn: [Double]
        public var eventsShipped: UInt64
        public var unacknowledgedAtEnd: Int
        public var overhead: Double

        public var table: String {
            func f(_ x: [Double]) -> String { x.map { String(format: "%.0f", $0) }.joined(separator: ", ") }
            return """

            trace benchmark
            record + spool, one thread      \(String(format: "%10.0f", recordEventsPerSecond)) events/s (\(String(format: "%.0f", recordBytesPerEvent)) bytes/event on disk)
            workload, tracing off           \(f(stepsOff)) steps/s
            workload, tracing on            \(f(stepsOn)) steps/s = events/s recorded (one span per step, shipped to the collector)
            events shipped and acknowledged \(eventsShipped) (\(unacknowledgedAtEnd) unacknowledged at the end)
            overhead (median of pairs)      \(String(format: "%9.2f %%", overhead * 100))
            target (< 5 % overhead): \(overhead < 0.05 ? "met" : "NOT met")
            """
        }
    }

    /// Work that stands for a step of real work: FNV hashing over the buffer.
    @inline(never)
    static func step(_ buffer: inout [UInt8], _ seed: UInt64) -> UInt64 {
        var h = seed | 1
        for i in buffer.indices {
            h = (h ^ UInt64(buffer[i])) &* 0x100000001b3
            buffer[i] = UInt8(truncatingIfNeeded: h >> 17)
        }
        return h
    }

    public static func run(recordEvents: Int, seconds: Double, pairs: Int, stepBytes: Int = 65_536, progress: (String) -> Void) throws -> Result {
        let dir = NSTemporaryDirectory() + "strato-bench-trace-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        // 1. Record rate.
        let recorder = Tracer()
        try recorder.enable(process: "bench", spoolDirectory: dir + "/spool")
        let t0 = Date()
        for i in 0..<recordEvents {
            recorder.record(.span, "step", category: "bench", track: "work", at: Int64(i), duration: 1000, args: ["i": "x"])
            if i % 2000 == 1999, let b = recorder.takeBatch(nowMono: 0, clock: nil) {
                var ack = TraceBatchAck(); ack.instance = b.instance; ack.throughSeq = b.events.last!.seq
                recorder.acknowledge(ack)
            }
        }
        let recordSeconds = Date().timeIntervalSince(t0)
        recorder.disable()
        let spoolBytes = (try? FileManager.default.contentsOfDirectory(atPath: dir + "/spool"))?.reduce(0) { sum, f in
            sum + ((try? FileManager.default.attributesOfItem(atPath: dir + "/spool/" + f)[.size] as? Int) ?? 0)
        } ?? 0
        progress(String(format: "recorded %d events in %.2f s", recordEvents, recordSeconds))

        // 2. Overhead: a real collector process and a real agent session shipping batches.
        let endpoint = "ipc://\(dir)/control.sock"
        let coordinator = try ProcessLauncher.spawn(ProcessLauncher.selfExecutable, ["coordinator", "--endpoint", endpoint, "--state-dir", dir + "/state"],
                                                    logFile: dir + "/coordinator.log", newSession: false)
        defer { ProcessLauncher.terminate(coordinator, grace: 3) }
        let client = try OperatorClient(endpoint: endpoint)
        defer { client.close() }
        var up = false
        for _ in 0..<100 where !up { up = (try? client.status(timeoutMs: 200)) != nil }
        guard up else { throw ProcessLauncher.LaunchError(description: "coordinator did not start: " + Testbed.tail(dir + "/coordinator.log")) }
        var config = AgentSessionConfig()
        config.endpoint = endpoint
        let behavior = try RenderSite(siteKind: .edge, slots: 4, gpuModel: "L4")
        let session = AgentSession(config: config, nodes: [(AgentIdentity(nodeID: "bench-0", siteName: "edge", siteKind: .edge), behavior)])
        let thread = Thread { try? session.run() }
        thread.start()
        defer { session.stop() }
        let tracer = Tracer.shared
        var buffer = [UInt8](repeating: 7, count: max(64, stepBytes))
        var sink: UInt64 = 0
        func measure(traced: Bool) -> Double {
            let end = Date().addingTimeInterval(seconds)
            var steps = 0
            let clock = SystemClock.shared
            while Date() < end {
                for _ in 0..<64 {
                    let s = traced ? clock.wallNanos() : 0
                    sink &+= step(&buffer, UInt64(steps))
                    if traced { tracer.span("step", category: "bench", track: "work", start: s, end: clock.wallNanos()) }
                    steps += 1
                }
            }
            return Double(steps) / seconds
        }
        _ = measure(traced: false)   // warm-up
        var off: [Double] = [], on: [Double] = []
        var shipped: UInt64 = 0
        for i in 0..<pairs {
            off.append(measure(traced: false))
            try tracer.enable(process: "bench-0", spoolDirectory: dir + "/spool-on")
            on.append(measure(traced: true))
            // Let the session ship what is left, then stop recording.
            let drain = Date().addingTimeInterval(3)
            while tracer.unacknowledged > 0 && Date() < drain { usleep(20_000) }
            shipped += tracer.recordedCount - UInt64(tracer.unacknowledged)
            if i < pairs - 1 { tracer.disable() }
            progress(String(format: "pair %d: off %.0f, on %.0f steps/s", i + 1, off.last!, on.last!))
        }
        let left = tracer.unacknowledged
        tracer.disable()
        if sink == 42 { progress("") }   // keep the work observable
        let ratios = zip(on, off).map { 1 - $0 / $1 }.sorted()
        return Result(recordEventsPerSecond: Double(recordEvents) / recordSeconds, recordBytesPerEvent: Double(spoolBytes) / Double(recordEvents),
                      stepsOff: off, stepsOn: on, eventsShipped: shipped, unacknowledgedAtEnd: left, overhead: ratios[ratios.count / 2])
    }
}
