import Foundation
import Scheduling
import Testing
@testable import Features

@Suite("GPU prefix cache and cache-aware routing")
struct PrefixRoutingTests {
    @Test("the GPU's prefix cache holds what fits its free blocks, oldest use out first")
    func gpuPrefixCache() {
        var c = GPUPrefixCache()
        c.insert(["a", "b", "c", "d"], chunkTokens: 512)
        #expect(c.longest(["a", "b", "x"]) == 2)
        // 1,024 free tokens keep two chunks: the two used last (a and b were just used).
        c.trim(toTokens: 1024)
        #expect(c.count == 2 && c.longest(["a", "b"]) == 2 && c.longest(["c"]) == 0)
        c.trim(toTokens: 100)
        #expect(c.count == 0)
    }

    private func q(_ id: String, _ keys: [String], at t: Double = 0) -> ServiceRequest {
        var r = ServiceRequest(id: id, serviceID: "s", arrival: t, prefill: 2000, decode: 10)
        r.prefixKeys = keys; r.prefixChunkTokens = 512
        return r
    }

    @Test("cache-aware routing sends a request to the replica that had its prefix, unless that one is loaded past the slack")
    func affinityWithinSlack() {
        let svc = ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1, rateCurve: [RatePoint(time: 0, rps: 1)],
                              meanPrefillTokens: 2000, meanDecodeTokens: 10, sloSeconds: 60)
        let r = RequestRouter()
        r.prefixAffinity = true
        r.replicaReady("r1", service: "s", node: "n1", batch: 8)
        r.replicaReady("r2", service: "s", node: "n2", batch: 8)
        _ = r.submit([q("a", ["k1", "k2"]), q("b", ["m1"])], services: ["s": svc])
        #expect(r.route(now: 1).map { "\($0.replica):\($0.requests.map(\.id))" } == ["r1:[\"a\"]", "r2:[\"b\"]"])
        // "c" shares a's prefix: r1, even though r2 would do as well by load.
        _ = r.submit([q("c", ["k1", "k2", "k3"], at: 2), q("d", ["m1", "m2"], at: 2)], services: ["s": svc])
        let second = r.route(now: 2)
        #expect(second.first { $0.requests.contains { $0.id == "c" } }?.replica == "r1")
        #expect(second.first { $0.requests.contains { $0.id == "d" } }?.replica == "r2")
        // Both hold 2. f1 (new prefix) ties to r1; f2 and f3 follow k1 to r1 while it has at most
        // 2 more than r2 (the slack: a quarter of the batch of 8); then e, with r1 at 5 and r2 at
        // 2, goes to r2 by load.
        _ = r.submit([q("f1", ["z1"], at: 3), q("f2", ["k1"], at: 3), q("f3", ["k1"], at: 3)], services: ["s": svc])
        _ = r.route(now: 3)
        #expect(r.outstanding(on: "r1").count == 5 && r.outstanding(on: "r2").count == 2)
        _ = r.submit([q("e", ["k1", "k2"], at: 4)], services: ["s": svc])
        #expect(r.route(now: 4).first?.replica == "r2")
        #expect(r.prefixRouted == 2, "f2 and f3 (c tied on load and went to r1 anyway)")

        // Off: join-shortest-queue only.
        let plain = RequestRouter()
        plain.replicaReady("r1", service: "s", node: "n1", batch: 8)
        plain.replicaReady("r2", service: "s", node: "n2", batch: 8)
        _ = plain.submit([q("a", ["k1"]), q("b", ["k1"])], services: ["s": svc])
        #expect(plain.route(now: 1).count == 2 && plain.prefixRouted == 0)
    }
}
