import Cluster
import DataPlane
import Foundation
import Protocol
import Scheduling
import Testing
import Wire
@testable import Features

/// A memory host and two GPU nodes in one process on real data planes (TCP loopback): each GPU
/// node has its migration handler staging through its memory-tiers cache, as the agent wires them.
private final class StagingRig {
    let hostPlane: DataPlane, srcPlane: DataPlane, dstPlane: DataPlane
    let host: TierStoreHandler
    let srcReplicas = EmulatedReplicas(kb: llamaA100KB), dstReplicas = EmulatedReplicas(kb: llamaA100KB)
    let srcCache: KVTierCache, dstCache: KVTierCache
    let src: MigrationHandler, dst: MigrationHandler

    init() throws {
        hostPlane = try DataPlane(config: DataPlaneConfig(nodeID: "mem-0"))
        host = TierStoreHandler(store: try TieredBlockStore(tiers: [(DRAMTier(), 64 << 20)]), plane: hostPlane)
        srcPlane = try DataPlane(config: DataPlaneConfig(nodeID: "node-src"))
        dstPlane = try DataPlane(config: DataPlaneConfig(nodeID: "node-dst"))
        srcCache = KVTierCache(replicas: srcReplicas, plane: srcPlane)
        dstCache = KVTierCache(replicas: dstReplicas, plane: dstPlane)
        src = MigrationHandler(replicas: srcReplicas, plane: srcPlane)
        dst = MigrationHandler(replicas: dstReplicas, plane: dstPlane)
        src.staging = srcCache; dst.staging = dstCache
        let wall = SystemClock.shared.wallNanos()
        for (r, id) in [(srcReplicas, "r-src"), (dstReplicas, "r-dst")] {
            var s = StartReplica()
            s.replicaID = id; s.serviceID = "svc"; s.model = "Llama-2-7b"; s.gpuModel = "A100-80GB"; s.gpus = [0]; s.batch = 8; s.timeScale = 1
            s.kvBytesScale = 1.0 / 4096
            precondition(r.start(s, nodeGPUModel: "A100-80GB", nodeGPUs: 1, busy: [], wallNanos: wall).ok)
        }
        var cfg = TierConfig()
        cfg.policy = "none"; cfg.linkBytesPerSecond = 12.5e9; cfg.linkLatencySeconds = 10e-6; cfg.version = 1
        var h = MemoryHostAddress(); h.node = "mem-0"; h.endpoint = hostPlane.endpoint
        var f = TierFigure(); f.kind = "dram"; f.bandwidthGbps = 20; f.latencyNs = 100; h.tiers = [f]
        cfg.hosts = [h]
        var c = TierCommand(); c.config = cfg
        let body = Array(try c.serializedData())
        precondition(srcCache.execute(body, commandID: 1, wallNanos: 0).ok && dstCache.execute(body, commandID: 1, wallNanos: 0).ok)
    }

    deinit { hostPlane.close(); srcPlane.close(); dstPlane.close() }

    func serve(_ id: String, prompt: Int = 1000, decode: Int = 300) {
        var q = InferenceRequest(); q.requestID = id; q.serviceID = "svc"; q.prefillTokens = UInt32(prompt); q.decodeTokens = UInt32(decode)
        var sr = ServeRequests(); sr.replicaID = "r-src"; sr.requests = [q]
        _ = srcReplicas.serve(sr, wallNanos: SystemClock.shared.wallNanos())
    }

    func migrate(_ request: String, id: String, staging: Bool = true) -> FeatureOutcome {
        var m = MigrateRequest()
        m.migrationID = id; m.requestID = request; m.sourceReplica = "r-src"; m.destinationNode = "node-dst"; m.destinationReplica = "r-dst"
        m.destinationEndpoint = dstPlane.endpoint; m.method = "live"; m.downtimeBudgetSeconds = 0.02; m.stageCap = 8
        m.stageViaMemoryHost = staging
        var c = MigrationCommand(); c.migrate = m
        return src.execute(Array(try! c.serializedData()), commandID: 1, wallNanos: SystemClock.shared.wallNanos())
    }

    @discardableResult
    func run(seconds: Double = 10, each: () -> Void = {}, until done: () -> Bool) throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if done() { return true }
            _ = try ZMQPoller.readable(hostPlane.sockets + srcPlane.sockets + dstPlane.sockets, timeoutMs: 2)
            try hostPlane.pump(); try srcPlane.pump(); try dstPlane.pump()
            let wall = SystemClock.shared.wallNanos()
            host.pump(wallNanos: wall)
            srcCache.pump(wallNanos: wall); dstCache.pump(wallNanos: wall)
            src.pump(wallNanos: wall); dst.pump(wallNanos: wall)
            each()
        }
        return done()
    }

    func outcomes(_ h: MigrationHandler) -> [String: MigrationReport] { h.outcomeReports() }

    /// Pumps until `id` finishes on the destination; its results there.
    func finishedOnDestination(_ id: String) throws -> [RequestResult] {
        var results: [RequestResult] = []
        try run(seconds: 20) {
            results += dstReplicas.results(wallNanos: SystemClock.shared.wallNanos())
            return results.contains { $0.requestID == id }
        }
        return results.filter { $0.requestID == id }
    }

    /// Sets aside every free block of the destination (as if other requests held them).
    func fillDestination() -> Int {
        let free = dstReplicas.loads(wallNanos: SystemClock.shared.wallNanos())[0].load.totalBlocks
        precondition(dstReplicas.reserve(free, for: "other", in: "r-dst") == nil)
        return free
    }
}

@Suite("Migration staged through a memory host")
struct MigrationStagingTests {
    @Test("a full destination: the source puts the request's KV on the memory host as real bytes and is emptied at once; the destination queues it, fetches it (every byte checked) when room comes, and it finishes there once")
    func stagedThroughHost() throws {
        let rig = try StagingRig()
        rig.serve("q")
        usleep(150_000)   // prefilled and decoding
        let held = rig.fillDestination()
        #expect(rig.migrate("q", id: "m1").ok)
        #expect(try rig.run { rig.outcomes(rig.src)["m1/source"] != nil })
        let s = try #require(rig.outcomes(rig.src)["m1/source"])
        #expect(s.outcome == "done" && s.detail.contains("staged on memory host mem-0 (dram)"), "\(s)")
        #expect(s.blocks > 0 && s.bytes == UInt64(s.blocks) * 2048, "its blocks as real bytes (8 MiB at 1/4096): \(s)")
        #expect(rig.srcReplicas.place(of: "q", in: "r-src") == nil, "the source is empty of it")
        #expect(rig.dstReplicas.place(of: "q", in: "r-dst") == .swapped, "queued on the destination as swapped out to the host")
        // Its blocks stay on the host; the state kept beside them goes once the destination has the request.
        #expect(try rig.run(seconds: 3) { rig.host.store.count == Int(s.blocks) }, "\(rig.host.store.keys)")
        #expect(rig.host.store.keys.allSatisfy { $0.hasPrefix("stage/m1/") && !$0.hasSuffix("state") })
        // Still no room: it waits, and the host keeps its KV.
        try rig.run(seconds: 0.3) { false }
        #expect(rig.dstReplicas.place(of: "q", in: "r-dst") == .swapped && rig.host.store.count == Int(s.blocks))
        // Room comes: it is fetched back and finishes on the destination, once.
        rig.dstReplicas.release(held, for: "other", in: "r-dst")
        #expect(try rig.finishedOnDestination("q").count == 1)
        #expect(rig.dstCache.stats.swapIns == 1 && rig.dstCache.stats.swapFallbacks == 0 && rig.dstCache.stats.swapBytesIn == s.bytes)
        #expect(rig.srcCache.stats.stagedOuts == 1 && rig.srcCache.stats.stagedBytes == s.bytes && rig.dstCache.stats.stagedIns == 1)
        #expect(rig.host.store.count == 0, "taken off the host")
        #expect(try rig.run(seconds: 10) { rig.outcomes(rig.dst)["m1/destination"] != nil })
        let d = try #require(rig.outcomes(rig.dst)["m1/destination"])
        #expect(d.outcome == "committed" && d.detail.contains("staged on memory host mem-0") && d.downtimeSeconds > 0.3, "it waited for room: \(d)")
        #expect(rig.srcReplicas.results(wallNanos: SystemClock.shared.wallNanos()).allSatisfy { $0.requestID != "q" })
    }

    @Test("the staged KV lost on the host before room comes: the destination recomputes the request, counts it, and it still finishes once")
    func stagedKVLost() throws {
        let rig = try StagingRig()
        rig.serve("q")
        usleep(150_000)
        let held = rig.fillDestination()
        #expect(rig.migrate("q", id: "m2").ok)
        #expect(try rig.run { rig.outcomes(rig.src)["m2/source"]?.outcome == "done" })
        for k in rig.host.store.keys { rig.host.store.delete(k) }   // the host restarted
        rig.dstReplicas.release(held, for: "other", in: "r-dst")
        #expect(try rig.finishedOnDestination("q").count == 1)
        #expect(rig.dstCache.stats.swapFallbacks == 1 && rig.dstCache.stats.swapIns == 0)
    }

    /// The coordinator's resolve for a migration whose source died, as it sends it to the destination.
    fileprivate func resolve(_ rig: StagingRig, migration: String, request: String) -> FeatureOutcome {
        var r = ResolveOrphan(); r.migrationID = migration; r.resume = true; r.requestID = request; r.destinationReplica = "r-dst"
        var c = MigrationCommand(); c.resolve = r
        return rig.dst.execute(Array(try! c.serializedData()), commandID: 9, wallNanos: SystemClock.shared.wallNanos())
    }

    @Test("the source dies after staging, before the hand-over: resolved by the coordinator, the destination takes the request on from the memory host alone (state and KV) and it finishes once there; with nothing staged it reports it holds nothing")
    func sourceDiedAfterStaging() throws {
        let rig = try StagingRig()
        rig.serve("q")
        usleep(150_000)
        // What the source does before its hand-over: the request out of its engine, its KV and state on the host.
        let st = try #require(rig.srcReplicas.takeOut("q", from: "r-src", wallNanos: SystemClock.shared.wallNanos()))
        let blocks = try rig.srcReplicas.blockBytes("q", count: (st.computed + 15) / 16, in: "r-src")
        let tc = try #require(rig.srcReplicas.clock(of: "r-src"))
        let state: [UInt8] = try MigrationHandler.encode(st, clock: tc, highPriority: false).serializedBytes()
        var staged: StagedKV?
        rig.srcCache.stage(keyPrefix: "stage/m7/", request: "q", replica: "r-src", blocks: blocks, state: state) { if case .success(let k) = $0 { staged = k } }
        #expect(try rig.run { staged != nil })
        #expect(rig.host.store.count == blocks.count + 1, "its blocks and its state")
        // The source is gone; the coordinator resolves the migration on the destination.
        #expect(resolve(rig, migration: "m7", request: "q").ok)
        #expect(try rig.run { rig.outcomes(rig.dst)["m7/destination"] != nil })
        let d = try #require(rig.outcomes(rig.dst)["m7/destination"])
        #expect(d.outcome == "resumed-partial" && d.detail.contains("after the source died"), "\(d)")
        #expect(try rig.finishedOnDestination("q").count == 1)
        #expect(rig.dstCache.stats.swapIns == 1 && rig.host.store.count == 0, "its KV came back from the host, and the state was removed")
        // Nothing staged for another one: the destination says so, and the coordinator sends the request again.
        #expect(resolve(rig, migration: "m8", request: "q2").ok)
        #expect(try rig.run { rig.outcomes(rig.dst)["m8/destination"] != nil })
        let none = try #require(rig.outcomes(rig.dst)["m8/destination"])
        #expect(none.outcome == "dropped" && none.detail.contains("no KV staged"), "\(none)")
        #expect(rig.dst.problems["staged_recovery_failed"] == 1)
    }

    @Test("staging not asked for: a full destination ends the migration and nothing goes to the host")
    func notAsked() throws {
        let rig = try StagingRig()
        rig.serve("q")
        usleep(150_000)
        _ = rig.fillDestination()
        #expect(rig.migrate("q", id: "m3", staging: false).ok)
        #expect(try rig.run { rig.outcomes(rig.src)["m3/source"] != nil })
        #expect(rig.outcomes(rig.src)["m3/source"]?.outcome == "aborted" && rig.host.store.count == 0)
        #expect(rig.srcReplicas.place(of: "q", in: "r-src") == .running)
    }

    @Test("a staged offer without where the KV is, or to a node with no memory hosts: refused by name")
    func badStagedOffer() throws {
        let rig = try StagingRig()
        var offer = TransferOffer()
        offer.meta = ["migration": "mx", "request": "q", "replica": "r-dst", "phase": "staged", "first_block": "0"]
        let why = try #require(rig.dst.shouldAccept(from: "node-src", transfer: 1, offer: offer))
        #expect(why.contains("staged_host"), "\(why)")
        #expect(rig.dst.problems["malformed_offer"] == 1)
        // Well formed, to a node whose agent has no memory-tiers feature.
        var st = MigratingRequest(); st.requestID = "q"; st.promptTokens = 100; st.decodeTokens = 10; st.computedTokens = 100
        offer.meta["state"] = try st.serializedData().base64EncodedString()
        offer.meta.merge(StagedKV(host: "mem-0", tier: "dram", keyPrefix: "stage/mx/", blocks: 7, seconds: 0.001).meta) { _, b in b }
        rig.dst.staging = nil
        #expect(rig.dst.shouldAccept(from: "node-src", transfer: 2, offer: offer)?.contains("no memory-tiers feature") == true)
        // A memory host this node does not know of.
        rig.dst.staging = rig.dstCache
        offer.meta["staged_host"] = "mem-9"
        #expect(rig.dst.shouldAccept(from: "node-src", transfer: 3, offer: offer)?.contains("mem-9") == true)
        #expect(rig.dstReplicas.place(of: "q", in: "r-dst") == nil, "nothing was queued")
    }
}
