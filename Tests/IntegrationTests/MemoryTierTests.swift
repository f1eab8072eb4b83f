import Cluster
import Experiments
import Features
import Foundation
import Protocol
import Scheduling
import Testing

/// Two GPU agents and one memory host: a prompt's KV chunks, stored on the memory host by the
/// agent that prefilled them, are loaded by the other agent for a request with the same prefix
/// (real bytes over the data plane, every byte checked); the memory host killed: requests are
/// prefilled again, none is lost.
private final class TierBed {
    let cluster: TestCluster
    let client: OperatorClient
    static let service = "svc"
    /// 16 chunks of 1,024 tokens: a prefill of seconds on an A100, a load of a fraction of that.
    static let chunkTokens = 1024
    static let keys = PrefixKeys.chain(Array(7000..<7016), model: "Meta-Llama-3-8B")

    init(name: String) throws {
        let nodes = """
              - {id: gpu-a, kind: gpu, site: cloud, gpu: {model: A100-80GB, count: 1}}
              - {id: gpu-b, kind: gpu, site: cloud, gpu: {model: A100-80GB, count: 1}}
              - {id: mem-a, kind: memory, site: cloud, tiers: [dram:64MiB, nvme:64MiB]}
            """
        cluster = try TestCluster(name: name, security: .curve, nodes: nodes,
                                  coordinatorExtra: "  time_scale: 1\n  kv_bytes_scale: \(1.0 / 4096)\n  offload_policy: dram", timeout: 60)
        do {
            client = try cluster.client()
            var spec = ServiceSpec(id: TierBed.service, model: "Meta-Llama-3-8B", gpuModel: "A100-80GB", gpusPerReplica: 1,
                                   rateCurve: [RatePoint(time: 0, rps: 0.05)], meanPrefillTokens: 4096, meanDecodeTokens: 64, sloSeconds: 3600, minReplicas: 2)
            spec.maxNumSeqs = 64
            let sub = try client.submit([], services: [spec.submission])
            guard sub.accepted == 1 else { throw TestFailure("service rejected: \(sub.rejected)") }
            try cluster.waitFor("two ready replicas", seconds: 30) { try self.client.requests().services.first?.ready == 2 }
            // Both GPU agents know the memory host before the first request.
            try cluster.waitFor("mem-a alive", seconds: 20) { try self.client.tiers().hosts.contains { $0.node == "mem-a" && $0.alive } }
            // The coordinator pushes the host list to the GPU agents with its next round.
            usleep(1_000_000)
        } catch {
            cluster.shutdown()
            throw error
        }
    }

    func shutdown() { client.close(); cluster.shutdown() }

    func submit(_ ids: [String], keys: [String] = TierBed.keys) throws {
        let now = try client.requests().traceNow
        let reqs = ids.map { id -> InferenceRequest in
            var q = ServiceRequest(id: id, serviceID: TierBed.service, arrival: now, prefill: TierBed.keys.count * TierBed.chunkTokens + 100, decode: 32)
            q.prefixKeys = keys
            q.prefixChunkTokens = TierBed.chunkTokens
            return q.message
        }
        let reply = try client.submit(requests: reqs)
        guard reply.accepted == UInt32(ids.count) else { throw TestFailure("requests rejected: \(reply.rejected)") }
    }

    func waitFinished(_ ids: [String], seconds: Double = 60) throws -> [String: RequestRecord] {
        try cluster.waitFinished(ids, client: client, seconds: seconds)
    }

    func kv(_ node: String) throws -> KVCacheStats? { try client.tiers().gpus.first { $0.node == node }?.stats }
    func host() throws -> HostTiers? { try client.tiers().hosts.first { $0.node == "mem-a" } }
}

extension MultiProcess {
@Suite("Memory tiers: a prefix shared by two GPU agents through one memory host")
struct MemoryTierTests {
    @Test("the second agent loads the prefix the first one stored and its time to first token drops; with the memory host killed requests are prefilled and none is lost")
    func sharedPrefix() throws {
        let bed = try TierBed(name: "tiers")
        defer { bed.shutdown() }
        try bed.submit(["first"])
        let first = try bed.waitFinished(["first"])["first"]!
        // Its 16 chunks reach the memory host after its prefill.
        try bed.cluster.waitFor("16 chunks on mem-a", seconds: 20) {
            (try bed.host()?.stats.tiers.reduce(0) { $0 + $1.blocks } ?? 0) >= 16
        }
        // Two at once: the router puts them on the two replicas, so one is on the other agent.
        try bed.submit(["second", "third"])
        let later = try bed.waitFinished(["second", "third"])
        let other = try #require(later.values.first { $0.nodeID != first.nodeID }, "one of the two ran on the agent that did not prefill the prefix")
        #expect(other.ttft < first.ttft * 0.5, "TTFT \(other.ttft) s with the prefix loaded vs \(first.ttft) s prefilled")
        // The agent's cache statistics come with its periodic tier report, which may follow the
        // request's result by a heartbeat or two: wait for the report that counts the hit.
        var stats = KVCacheStats()
        _ = try? bed.cluster.waitFor("\(other.nodeID) reports its prefix hit", seconds: 10) {
            stats = try bed.kv(other.nodeID) ?? stats
            return stats.hits >= 1 && stats.loadedBytes > 0
        }
        #expect(stats.hits >= 1 && stats.hitTokens >= UInt64(16 * TierBed.chunkTokens))
        #expect(stats.loadedBytes > 0 && stats.loadedByTier["dram", default: 0] > 0)

        // The memory host dies: a request with a new prefix (not in either GPU's own cache) finds no
        // host to ask (a lookup that times out, or none once the coordinator has noticed) and is
        // prefilled; it finishes all the same.
        bed.cluster.signal("mem-a", SIGKILL)
        try bed.submit(["after-kill"], keys: PrefixKeys.chain(Array(8000..<8016), model: "Meta-Llama-3-8B"))
        let after = try bed.waitFinished(["after-kill"])["after-kill"]!
        #expect(after.ttft > first.ttft * 0.8, "prefilled: \(after.ttft) s vs \(first.ttft) s for the first")
        try bed.cluster.waitFor("mem-a reported dead", seconds: 20) { try bed.host()?.alive == false }
        print("tiers: TTFT prefilled \(first.ttft) s (\(first.nodeID)), loaded \(other.ttft) s (\(other.nodeID)), after the host died \(after.ttft) s")
        let all = try bed.client.requests(includeRequests: true).requests
        #expect(all.count == 4 && all.allSatisfy { $0.finished >= 0 }, "every request finished")
    }
}
}
