import ArgumentParser
import Cluster
import DataPlane
import Features
import Foundation
import Protocol
import Scheduling
import Wire

/// `strato bench migration --concurrent N`: N requests moved at once from one replica to another by
/// the agents' own `MigrationHandler`s (the production path: reservation, stages, final copy,
/// commit), in real time (time scale 1), KV as real bytes at `kv_bytes_scale` 1 over a real
/// data-plane pair, every byte checked on arrival. Prints each migration's downtime and stages,
/// the total KV throughput against the data plane's bulk figure, and the time between tokens of
/// the requests that stay (neighbours) before and during the migrations.
enum ConcurrentMigrationBench {
    struct Result {
        var rows: [MigrationReport] = []
        var downtimes: [String: Double] = [:]
        var wallSeconds = 0.0
        var bytes: UInt64 = 0
        var neighbourTBTBefore = 0.0
        var neighbourTBTDuring = 0.0
        /// The same data-plane pair's bulk rate, pumped the same way (one thread, both ends).
        var bulk = 0.0
    }

    static func run(kb: KnowledgeBase, model: String, gpuModel: String, concurrent: Int, neighbours: Int, tokens: Int,
                    downtimeBudget: Double, progress: (String) -> Void) throws -> Result {
        let src = EmulatedReplicas(kb: kb), dst = EmulatedReplicas(kb: kb)
        // What the requests' KV will take, allocated up front as a serving engine does.
        // (Meta-Llama-3-8B holds 128 KiB per token; the requests grow by about 1,000 tokens during the copies.)
        src.preallocateBytes = (tokens + 1024) * (concurrent + neighbours) * 128 << 10
        dst.preallocateBytes = (tokens + 1024) * concurrent * 128 << 10
        let srcPlane = try DataPlane(config: DataPlaneConfig(nodeID: "bench-src")), dstPlane = try DataPlane(config: DataPlaneConfig(nodeID: "bench-dst"))
        defer { srcPlane.close(); dstPlane.close() }
        let srcHandler = MigrationHandler(replicas: src, plane: srcPlane), dstHandler = MigrationHandler(replicas: dst, plane: dstPlane)
        let clock = SystemClock.shared
        for (r, id) in [(src, "r-src"), (dst, "r-dst")] {
            var s = StartReplica()
            s.replicaID = id; s.serviceID = "bench"; s.model = model; s.gpuModel = gpuModel; s.gpus = [0]; s.batch = 64; s.timeScale = 1
            s.kvBytesScale = 1
            let ok = r.start(s, nodeGPUModel: gpuModel, nodeGPUs: 1, busy: [], wallNanos: clock.wallNanos())
            guard ok.ok else { throw ValidationError(ok.detail) }
        }
        func pump(_ seconds: Double, until done: () -> Bool = { false }) throws {
            let end = Date().addingTimeInterval(seconds)
            while Date() < end && !done() {
                _ = try ZMQPoller.readable(srcPlane.sockets + dstPlane.sockets, timeoutMs: 1)
                try srcPlane.pump(); try dstPlane.pump()
                let wall = clock.wallNanos()
                srcHandler.pump(wallNanos: wall); dstHandler.pump(wallNanos: wall)
            }
        }
        var result = Result()
        // The pair's own bulk figure first: 256 MiB in 1 MiB chunks into a sink that only counts.
        let sink = DataPlaneBench.BenchSink(capacity: 1 << 20)
        dstPlane.receiver = sink
        let payload = [UInt8](repeating: 0x5A, count: 1 << 20)
        var bulkDone: Swift.Result<Int, DataPlaneError>?
        let b0 = clock.monotonicNanos()
        try srcPlane.send(to: PeerAddress(endpoint: dstPlane.endpoint), kind: "bulk", totalBytes: 256 << 20, chunkBytes: 1 << 20,
                          source: { _, n, emit in try payload.withUnsafeBytes { try emit(UnsafeRawBufferPointer(rebasing: $0[0..<n])) } }, done: { bulkDone = $0 })
        try pump(60) { bulkDone != nil }
        guard case .success? = bulkDone else { throw ValidationError("the bulk transfer failed: \(String(describing: bulkDone))") }
        result.bulk = Double(256 << 20) / (Double(clock.monotonicNanos() - b0) / 1e9)
        progress(String(format: "  data plane bulk, this pair on this thread (256 MiB, 1 MiB chunks): %.2f GB/s", result.bulk / 1e9))
        // The movers and their neighbours decode on the source; the neighbours stay.
        var sr = ServeRequests(); sr.replicaID = "r-src"
        for i in 0..<(concurrent + neighbours) {
            var q = InferenceRequest()
            q.requestID = i < concurrent ? "move-\(i)" : "stay-\(i)"; q.serviceID = "bench"; q.prefillTokens = UInt32(tokens); q.decodeTokens = 4096
            sr.requests.append(q)
        }
        _ = src.serve(sr, wallNanos: clock.wallNanos())
        try pump(3)   // prefilled, decoding
        func neighbourTBT() -> Double {
            let gaps = (concurrent..<(concurrent + neighbours)).compactMap { i -> Double? in
                guard let st = src.peek("stay-\(i)", in: "r-src"), st.generated > 1 else { return nil }
                return st.gapSum / Double(st.generated - 1)
            }
            return gaps.isEmpty ? 0 : gaps.reduce(0, +) / Double(gaps.count)
        }
        func gapSums() -> [String: (Double, Int)] {
            Dictionary(uniqueKeysWithValues: (concurrent..<(concurrent + neighbours)).compactMap { i in
                src.peek("stay-\(i)", in: "r-src").map { ("stay-\(i)", ($0.gapSum, $0.generated)) }
            })
        }
        src.step("r-src", wallNanos: clock.wallNanos())
        result.neighbourTBTBefore = neighbourTBT()
        let before = gapSums()
        progress(String(format: "  %d requests of %d tokens decoding on the source (%d to move, %d neighbours), TBT %.2f ms",
                        concurrent + neighbours, tokens, concurrent, neighbours, result.neighbourTBTBefore * 1000))
        let t0 = clock.monotonicNanos()
        for i in 0..<concurrent {
            var m = MigrateRequest()
            m.migrationID = "bench-\(i)"; m.requestID = "move-\(i)"; m.sourceReplica = "r-src"; m.destinationNode = "bench-dst"; m.destinationReplica = "r-dst"
            m.destinationEndpoint = dstPlane.endpoint; m.method = "live"; m.downtimeBudgetSeconds = downtimeBudget; m.stageCap = 8
            m.bandwidthBytesPerSecond = result.bulk / Double(concurrent)   // each its share of the path at first
            var c = MigrationCommand(); c.migrate = m
            let out = srcHandler.execute(Array(try c.serializedData()), commandID: UInt64(i + 1), wallNanos: clock.wallNanos())
            guard out.ok else { throw ValidationError("migration \(i) refused: \(out.detail)") }
        }
        var sourceDone: [String: MigrationReport] = [:], destDone: [String: MigrationReport] = [:]
        func collect() {
            for r in srcHandler.reports(wallNanos: clock.wallNanos()) where !r.key.hasPrefix("load/") {
                if let m = try? MigrationReport(serializedBytes: r.body) { sourceDone[m.migrationID] = m }
            }
            for r in dstHandler.reports(wallNanos: clock.wallNanos()) where !r.key.hasPrefix("load/") {
                if let m = try? MigrationReport(serializedBytes: r.body), m.outcome != "orphaned" { destDone[m.migrationID] = m }
            }
        }
        try pump(120) { collect(); return sourceDone.count == concurrent && (destDone.count == concurrent || sourceDone.values.contains { $0.outcome != "done" }) }
        // The copy window: from the first migration's start to the last one's end, as the sources report.
        let first = sourceDone.values.map(\.startedUnixNanos).min() ?? 0, last = sourceDone.values.map(\.endedUnixNanos).max() ?? 0
        result.wallSeconds = last > first ? Double(last - first) / 1e9 : Double(clock.monotonicNanos() - t0) / 1e9
        src.step("r-src", wallNanos: clock.wallNanos())
        // Neighbours' time between tokens over the migrations alone: the gaps added since they started.
        let after = gapSums()
        var during: [Double] = []
        for (id, (sum, n)) in after { if let (s0, n0) = before[id], n > n0 { during.append((sum - s0) / Double(n - n0)) } }
        result.neighbourTBTDuring = during.isEmpty ? 0 : during.reduce(0, +) / Double(during.count)
        result.rows = (0..<concurrent).compactMap { sourceDone["bench-\($0)"] }
        for (id, d) in destDone { result.downtimes[id] = d.downtimeSeconds }
        result.bytes = result.rows.reduce(0) { $0 + $1.bytes }
        return result
    }
}
