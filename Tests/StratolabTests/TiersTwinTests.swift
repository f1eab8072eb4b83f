import Foundation
import Scheduling
import Testing
@testable import Features

@Suite("Memory tiers in the twin")
struct TiersTwinTests {
    func model(policy: String = "dram") throws -> TiersTwinModel {
        let tiers = [TiersTwinModel.Tier(kind: "dram", capacityBytes: 1 << 20, figures: TiersTwinModel.Settings.nominal("dram")),
                     TiersTwinModel.Tier(kind: "nvme", capacityBytes: 8 << 20, figures: TiersTwinModel.Settings.nominal("nvme"))]
        return try TiersTwinModel(TiersTwinModel.Settings(policy: policy, hosts: [TiersTwinModel.Host(node: "mem-0", tiers: tiers)],
                                                          linkBytesPerSecond: 12.5e9, kvBytesScale: 1.0 / 4096, lookupTimeout: 30, figuresSource: "nominal"))
    }

    func request(_ id: String) -> ServiceRequest {
        var q = ServiceRequest(id: id, serviceID: "svc", arrival: 0, prefill: 4200, decode: 8)
        q.prefixKeys = PrefixKeys.chain(Array(0..<9), model: "Llama-2-7b"); q.prefixChunkTokens = 512
        return q
    }

    @Test("a prefilled prompt's chunks are stored; the next request with that prefix loads them after the modelled load time")
    func storeThenLoad() throws {
        let t = try model()
        let first = t.arrived(request("a"), model: llamaA100, backlog: 0, maxBatchedTokens: 2048, at: 10)
        #expect(first.cached == 0 && first.readyAt == 10)
        t.prefilled(request("a"), model: llamaA100, maxBatchedTokens: 2048)
        #expect(t.counters["stored_chunks"] == 8)
        let second = t.arrived(request("b"), model: llamaA100, backlog: 0, maxBatchedTokens: 2048, at: 20)
        // 8 chunks of 512 tokens at 512 KiB a token: 2 GiB over the tier's 10 GB/s (slower than the link).
        let load = 4096 * llamaA100.arch.kvBytesPerToken / 10e9 + 100e-9 + 10e-6
        #expect(second.cached == 4096 && abs(second.readyAt - (20 + load)) < 1e-9)
        #expect(t.counters["hits"] == 1 && t.counters["hit_tokens"] == 4096 && t.hitRatio > 0.48)
    }

    @Test("a crashed host: lookups wait out the timeout until it is noticed; back up, its DRAM is empty and its NVMe kept")
    func crashedHost() throws {
        let t = try model(policy: "nvme")
        t.prefilled(request("a"), model: llamaA100, maxBatchedTokens: 2048)
        t.hostCrashed("mem-0")
        let r = t.arrived(request("b"), model: llamaA100, backlog: 0, maxBatchedTokens: 2048, at: 100)
        #expect(r.cached == 0 && r.readyAt == 130 && t.counters["fallbacks"] == 1)
        t.hostDetected("mem-0")
        #expect(t.arrived(request("c"), model: llamaA100, backlog: 0, maxBatchedTokens: 2048, at: 200) == (0, 200))
        t.hostUp("mem-0")
        #expect(t.arrived(request("d"), model: llamaA100, backlog: 0, maxBatchedTokens: 2048, at: 300).cached == 4096, "NVMe survived the restart")

        let d = try model(policy: "dram")
        d.prefilled(request("a"), model: llamaA100, maxBatchedTokens: 2048)
        d.hostCrashed("mem-0"); d.hostDetected("mem-0"); d.hostUp("mem-0")
        #expect(d.arrived(request("b"), model: llamaA100, backlog: 0, maxBatchedTokens: 2048, at: 10).cached == 0, "DRAM is empty after a restart")
    }
}
