import Cluster
import DataPlane
import Foundation
import Protocol
import Scheduling
import Testing
import Wire
@testable import Features

/// Two GPU nodes' migration handlers in one process, each over its own emulated replicas and a
/// real data plane (TCP loopback): requests move with their KV blocks as real bytes, every byte
/// checked on arrival; refusals, unknown migrations and corrupt blocks are named and counted.
private final class Pair {
    let srcReplicas = EmulatedReplicas(kb: llamaA100KB), dstReplicas = EmulatedReplicas(kb: llamaA100KB)
    let srcPlane: DataPlane, dstPlane: DataPlane
    let src: MigrationHandler, dst: MigrationHandler
    var commandID: UInt64 = 0

    init() throws {
        srcPlane = try DataPlane(config: DataPlaneConfig(nodeID: "node-src"))
        dstPlane = try DataPlane(config: DataPlaneConfig(nodeID: "node-dst"))
        src = MigrationHandler(replicas: srcReplicas, plane: srcPlane)
        dst = MigrationHandler(replicas: dstReplicas, plane: dstPlane)
        let wall = SystemClock.shared.wallNanos()
        for (r, id) in [(srcReplicas, "r-src"), (dstReplicas, "r-dst")] {
            var s = StartReplica()
            s.replicaID = id; s.serviceID = "svc"; s.model = "Llama-2-7b"; s.gpuModel = "A100-80GB"; s.gpus = [0]; s.batch = 8; s.timeScale = 1
            s.kvBytesScale = 1.0 / 4096
            precondition(r.start(s, nodeGPUModel: "A100-80GB", nodeGPUs: 1, busy: [], wallNanos: wall).ok)
        }
    }

    deinit { srcPlane.close(); dstPlane.close() }

    func serve(_ id: String, prompt: Int = 1000, decode: Int = 600) {
        var q = InferenceRequest(); q.requestID = id; q.serviceID = "svc"; q.prefillTokens = UInt32(prompt); q.decodeTokens = UInt32(decode)
        var sr = ServeRequests(); sr.replicaID = "r-src"; sr.requests = [q]
        _ = srcReplicas.serve(sr, wallNanos: SystemClock.shared.wallNanos())
    }

    func migrate(_ request: String, id: String, method: String = "live") -> FeatureOutcome {
        var m = MigrateRequest()
        m.migrationID = id; m.requestID = request; m.sourceReplica = "r-src"; m.destinationNode = "node-dst"; m.destinationReplica = "r-dst"
        m.destinationEndpoint = dstPlane.endpoint; m.method = method; m.downtimeBudgetSeconds = 0.02; m.stageCap = 8
        var c = MigrationCommand(); c.migrate = m
        commandID += 1
        return src.execute(Array(try! c.serializedData()), commandID: commandID, wallNanos: SystemClock.shared.wallNanos())
    }

    /// Pumps both planes and handlers until `done` holds (or `seconds` pass).
    @discardableResult
    func run(seconds: Double = 10, until done: () -> Bool) throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if done() { return true }
            _ = try ZMQPoller.readable(srcPlane.sockets + dstPlane.sockets, timeoutMs: 2)
            try srcPlane.pump(); try dstPlane.pump()
            let wall = SystemClock.shared.wallNanos()
            src.pump(wallNanos: wall); dst.pump(wallNanos: wall)
        }
        return done()
    }

    func outcomes(_ h: MigrationHandler) -> [String: MigrationReport] { h.outcomeReports() }
}

extension MigrationHandler {
    /// Outcome reports (not load reports), by key.
    func outcomeReports() -> [String: MigrationReport] {
        var out: [String: MigrationReport] = [:]
        for r in reports(wallNanos: SystemClock.shared.wallNanos()) where !r.key.hasPrefix("load/") {
            out[r.key] = try? MigrationReport(serializedBytes: r.body)
        }
        return out
    }
}

@Suite("Migration handler over a real data plane")
struct MigrationHandlerTests {
    @Test("live: the request moves with its KV bytes, resumes on the destination and finishes there; the source frees and will not serve it again")
    func live() throws {
        let p = try Pair()
        p.serve("q")
        usleep(150_000)   // prefilled and decoding
        #expect(p.migrate("q", id: "m1").ok)
        #expect(try p.run { p.outcomes(p.dst)["m1/destination"] != nil && p.outcomes(p.src)["m1/source"] != nil })
        let s = try #require(p.outcomes(p.src)["m1/source"]), d = try #require(p.outcomes(p.dst)["m1/destination"])
        #expect(s.outcome == "done" && s.blocks > 0 && s.bytes == UInt64(s.blocks) * 2048, "\(s)")
        #expect(d.outcome == "committed" && d.downtimeSeconds >= 0 && d.downtimeSeconds < 0.1, "\(d)")
        #expect(p.srcReplicas.place(of: "q", in: "r-src") == nil)
        #expect(p.dstReplicas.place(of: "q", in: "r-dst") != nil)
        // Sent to the source again (a coordinator restart): not served twice.
        p.serve("q")
        #expect(p.srcReplicas.place(of: "q", in: "r-src") == nil)
        // It finishes on the destination, once.
        var results: [RequestResult] = []
        try p.run(seconds: 20) {
            results = p.dstReplicas.results(wallNanos: SystemClock.shared.wallNanos())
            return results.contains { $0.requestID == "q" }
        }
        #expect(results.filter { $0.requestID == "q" }.count == 1 && results[0].replicaID == "r-dst")
        #expect(p.srcReplicas.results(wallNanos: SystemClock.shared.wallNanos()).allSatisfy { $0.requestID != "q" })
        // Settled: nothing is reported again.
        p.src.settle(["m1/source"]); p.dst.settle(["m1/destination"])
        #expect(p.outcomes(p.src).isEmpty && p.outcomes(p.dst).isEmpty)
    }

    @Test("a destination without room refuses the reservation by name; the request keeps running on the source")
    func destinationFull() throws {
        let p = try Pair()
        p.serve("q")
        usleep(100_000)
        // Everything free on the destination is set aside already.
        let free = p.dstReplicas.loads(wallNanos: SystemClock.shared.wallNanos())[0].load.totalBlocks
        #expect(p.dstReplicas.reserve(free, for: "other", in: "r-dst") == nil)
        #expect(p.migrate("q", id: "m2").ok)
        #expect(try p.run { p.outcomes(p.src)["m2/source"] != nil })
        let s = try #require(p.outcomes(p.src)["m2/source"])
        #expect(s.outcome == "aborted" && s.detail.contains("no room") && s.detail.contains("free KV blocks"), "\(s.detail)")
        #expect(p.srcReplicas.place(of: "q", in: "r-src") == .running)
    }

    @Test("bad input on the destination: blocks for an unknown migration, a corrupt block, an unknown request to move — each refused by name and counted")
    func badInput() throws {
        let p = try Pair()
        #expect(p.migrate("nope", id: "m3").detail.contains("not on replica r-src"))
        // A stage for a migration nobody reserved.
        var result: Result<Int, DataPlaneError>?
        try p.srcPlane.send(to: PeerAddress(endpoint: p.dstPlane.endpoint), kind: MigrationHandler.transferKind,
                            meta: ["migration": "ghost", "request": "q", "replica": "r-dst", "phase": "stage", "first_block": "0"],
                            totalBytes: 2048, source: { _, n, emit in try [UInt8](repeating: 1, count: n).withUnsafeBytes { try emit($0) } }, done: { result = $0 })
        #expect(try p.run { result != nil })
        guard case .failure(.refused(let why))? = result else { Issue.record("accepted: \(String(describing: result))"); return }
        #expect(why.contains("not in progress on this node"))
        #expect(p.dst.problems["unknown_migration"] == 1)
        // A reservation, then a stage whose bytes are not the block's contents.
        var st = MigratingRequest(); st.requestID = "q"; st.promptTokens = 100; st.decodeTokens = 10
        let state = try st.serializedData().base64EncodedString()
        result = nil
        try p.srcPlane.send(to: PeerAddress(endpoint: p.dstPlane.endpoint), kind: MigrationHandler.transferKind,
                            meta: ["migration": "m4", "request": "q", "replica": "r-dst", "phase": "reserve", "first_block": "0", "blocks": "7", "state": state],
                            totalBytes: 0, source: { _, _, _ in }, done: { result = $0 })
        #expect(try p.run { result != nil })
        guard case .success? = result else { Issue.record("reservation refused: \(String(describing: result))"); return }
        result = nil
        try p.srcPlane.send(to: PeerAddress(endpoint: p.dstPlane.endpoint), kind: MigrationHandler.transferKind,
                            meta: ["migration": "m4", "request": "q", "replica": "r-dst", "phase": "stage", "first_block": "0", "state": state],
                            totalBytes: 2048, source: { _, n, emit in try [UInt8](repeating: 0xAB, count: n).withUnsafeBytes { try emit($0) } }, done: { result = $0 })
        #expect(try p.run { result != nil && p.outcomes(p.dst)["m4/destination"] != nil })
        guard case .failure(.rejected(let what))? = result else { Issue.record("corrupt block accepted: \(String(describing: result))"); return }
        #expect(what.contains("is not its KV contents"), "\(what)")
        #expect(p.dst.problems["corrupt_block"] == 1)
        let d = try #require(p.outcomes(p.dst)["m4/destination"])
        #expect(d.outcome == "released")
        #expect(p.dstReplicas.loads(wallNanos: SystemClock.shared.wallNanos())[0].load.usedBlocks == 0, "the reservation is given back")
    }

    @Test("a destination with no room for a stage's further blocks refuses it by name and gives its whole reservation back at once: the source ends the move on any refusal and says nothing more")
    func refusedStageReleases() throws {
        let p = try Pair()
        var st = MigratingRequest(); st.requestID = "q"; st.promptTokens = 100; st.decodeTokens = 10
        let state = try st.serializedData().base64EncodedString()
        func offer(_ meta: [String: String], bytes: Int) throws -> Result<Int, DataPlaneError>? {
            var result: Result<Int, DataPlaneError>?
            try p.srcPlane.send(to: PeerAddress(endpoint: p.dstPlane.endpoint), kind: MigrationHandler.transferKind, meta: meta, totalBytes: bytes,
                                source: { _, n, emit in try [UInt8](repeating: 0, count: n).withUnsafeBytes { try emit($0) } }, done: { result = $0 })
            _ = try p.run { result != nil }
            return result
        }
        let base = ["migration": "m5", "request": "q", "replica": "r-dst", "first_block": "0", "state": state]
        guard case .success? = try offer(base.merging(["phase": "reserve", "blocks": "2"]) { $1 }, bytes: 0) else { Issue.record("reservation refused"); return }
        let load = { p.dstReplicas.loads(wallNanos: SystemClock.shared.wallNanos())[0].load }
        #expect(load().usedBlocks == 2)
        // Everything else is taken meanwhile; the stage brings 4 blocks, 2 more than reserved.
        let rest = load().totalBlocks - 2
        #expect(p.dstReplicas.reserve(rest, for: "other", in: "r-dst") == nil)
        let r = try offer(base.merging(["phase": "stage"]) { $1 }, bytes: 4 * 2048)
        guard case .failure(.refused(let why))? = r else { Issue.record("accepted: \(String(describing: r))"); return }
        #expect(why.contains("no room") && why.contains("2 further blocks"), "\(why)")
        #expect(p.dst.problems["no_room"] == 1)
        let d = try #require(p.outcomes(p.dst)["m5/destination"])
        #expect(d.outcome == "released" && d.detail.contains("no room"), "\(d)")
        #expect(load().usedBlocks == rest, "the migration's 2 blocks are back in the pool at once")
        // Blocks from beyond what arrived (a stage lost in between): refused and released the same way.
        p.dstReplicas.release(rest, for: "other", in: "r-dst")
        let m6 = ["migration": "m6", "request": "q6", "replica": "r-dst", "first_block": "0", "state": state]
        guard case .success? = try offer(m6.merging(["phase": "reserve", "blocks": "3"]) { $1 }, bytes: 0) else { Issue.record("reservation refused"); return }
        let before = load().usedBlocks
        let gap = try offer(m6.merging(["phase": "stage", "first_block": "1"]) { $1 }, bytes: 2048)
        guard case .failure(.refused(let outOfOrder))? = gap else { Issue.record("accepted: \(String(describing: gap))"); return }
        #expect(outOfOrder.contains("out of order") && p.dst.problems["out_of_order"] == 1, "\(outOfOrder)")
        #expect(p.outcomes(p.dst)["m6/destination"]?.outcome == "released")
        #expect(load().usedBlocks == before - 3, "its 3 blocks are back")
        // The source's abort arriving after that finds nothing wrong.
        #expect(try offer(m6.merging(["phase": "abort"]) { $1 }, bytes: 0).map { if case .success = $0 { true } else { false } } == true)
        #expect(p.dst.problems["unknown_migration"] == nil)
    }
}
