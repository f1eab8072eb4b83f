import Cluster
import Experiments
import Features
import Foundation
import Protocol
import Scheduling
import Testing

/// Two GPU agents, each serving one replica of a Llama-2-7B service, with requests moved between
/// them by hand: KV blocks as real bytes over the data plane (CURVE), every byte checked by the
/// receiver; the destination or the source killed mid-copy.
private final class MigrationBed {
    let cluster: TestCluster
    let client: OperatorClient
    static let service = "svc"

    init(name: String, network: String = "", kvBytesScale: Double = 1.0 / 4096, timeScale: Double = 4, migrationPolicy: String = "none",
         rateCurve: [RatePoint] = [RatePoint(time: 0, rps: 0.05)], minReplicas: Int = 2, staging: Bool = false, memoryUtilization: Double? = nil) throws {
        var nodes = """
              - {id: gpu-a, kind: gpu, site: cloud, gpu: {model: A100-80GB, count: 1}}
              - {id: gpu-b, kind: gpu, site: cloud, gpu: {model: A100-80GB, count: 1}}
            """
        if staging { nodes += "\n  - {id: mem-0, kind: memory, site: cloud, tiers: [dram:64MiB]}" }
        cluster = try TestCluster(name: name, security: .curve, nodes: nodes,
                                  coordinatorExtra: "  time_scale: \(timeScale)\n  kv_bytes_scale: \(kvBytesScale)\n  migration_policy: \(migrationPolicy)"
                                      + (staging ? "\n  migration_staging: true" : ""), network: network, timeout: 60)
        do {
            client = try cluster.client()
            var spec = ServiceSpec(id: MigrationBed.service, model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1,
                                   rateCurve: rateCurve, meanPrefillTokens: 1024, meanDecodeTokens: 1024, sloSeconds: 3600, minReplicas: minReplicas)
            spec.maxNumSeqs = 256
            if let u = memoryUtilization { spec.gpuMemoryUtilization = u }
            let sub = try client.submit([], services: [spec.submission])
            guard sub.accepted == 1 else { throw TestFailure("service rejected: \(sub.rejected)") }
            try cluster.waitFor("two ready replicas", seconds: 30) { try self.client.requests().services.first?.ready == 2 }
        } catch {
            cluster.shutdown()
            throw error
        }
    }

    func shutdown() { client.close(); cluster.shutdown() }

    /// Requests that arrive now, each `prompt` + `decode` tokens.
    func submit(_ ids: [String], prompt: Int = 1024, decode: Int = 1500) throws {
        let now = try client.requests().traceNow
        let reply = try client.submit(requests: ids.map { ServiceRequest(id: $0, serviceID: MigrationBed.service, arrival: now, prefill: prompt, decode: decode).message })
        guard reply.accepted == UInt32(ids.count) else { throw TestFailure("requests rejected: \(reply.rejected)") }
    }

    func record(_ id: String) throws -> RequestRecord? {
        try client.requests(includeRequests: true).requests.first { $0.requestID == id }
    }

    /// Waits until the request is on a replica (routed, and given a moment to start decoding).
    func placed(_ id: String) throws -> RequestRecord {
        var rec: RequestRecord?
        try cluster.waitFor("\(id) on a replica", seconds: 20) {
            rec = try self.record(id)
            return rec.map { !$0.nodeID.isEmpty } ?? false
        }
        return rec!
    }

    func migration(_ id: String) throws -> MigrationRecord? {
        try client.migrations().migrations.first { $0.migrationID == id }
    }

    /// The migration once it ended; a done one once both sides' reports are in (either may come
    /// first: the destination's "committed" alone settles it).
    func waitEnded(_ id: String, seconds: Double = 40) throws -> MigrationRecord {
        var m: MigrationRecord?
        try cluster.waitFor("migration \(id) to end", seconds: seconds) {
            m = try self.migration(id)
            return m.map { $0.state != "in-flight" && $0.state != "orphaned" && ($0.state != "done" || !$0.sourceOutcome.isEmpty) } ?? false
        }
        return m!
    }

    func waitFinished(_ ids: [String], seconds: Double = 90) throws -> [String: RequestRecord] {
        try cluster.waitFinished(ids, client: client, seconds: seconds)
    }

    static func other(_ node: String) -> String { node == "gpu-a" ? "gpu-b" : "gpu-a" }

    /// 128 KiB blocks through a 4 MB/s link: a copy takes seconds.
    static func slow(name: String) throws -> MigrationBed {
        try MigrationBed(name: name, network: "network:\n  cloud: {bandwidth: 4MB/s}", kvBytesScale: 1.0 / 64)
    }

    /// A long request, decoding, starts moving live to the other node: (its node, the destination, the migration).
    func startSlowMigration() throws -> (at: RequestRecord, dest: String, migration: MigrationRecord) {
        try submit(["q"], prompt: 2048, decode: 2500)
        let at = try placed("q")
        usleep(500_000)
        let dest = MigrationBed.other(at.nodeID)
        return (at, dest, try client.migrate(request: "q", to: dest, method: "live"))
    }
}

extension MultiProcess {
@Suite("Live migration between two GPU agents")
struct MigrationTests {
    @Test("live, blocking and recompute each move a running request with its KV bytes; it finishes once, on the destination; bad requests are named")
    func methods() throws {
        let bed = try MigrationBed(name: "migrate")
        defer { bed.shutdown() }
        let ids = ["q-live", "q-blocking", "q-recompute"]
        try bed.submit(ids)
        var started: [String: MigrationRecord] = [:]
        for (id, method) in zip(ids, ["live", "blocking", "recompute"]) {
            let at = try bed.placed(id)
            usleep(400_000)   // decoding by now
            let m = try bed.client.migrate(request: id, to: MigrationBed.other(at.nodeID), method: method)
            #expect(m.fromNode == at.nodeID && m.toNode == MigrationBed.other(at.nodeID) && m.method == method)
            started[id] = m
        }
        for (id, m) in started {
            let done = try bed.waitEnded(m.migrationID)
            #expect(done.state == "done", "\(id): \(done.state) \(done.detail)")
            #expect(done.sourceOutcome == "done")
            if done.method == "recompute" { #expect(done.bytes == 0 && done.blocks == 0) }
            else { #expect(done.blocks > 0 && done.bytes == UInt64(done.blocks) * 2048, "\(id): \(done.blocks) blocks, \(done.bytes) bytes") }
        }
        let finished = try bed.waitFinished(ids)
        for (id, m) in started {
            let r = try #require(finished[id])
            #expect(r.nodeID == m.toNode && r.replicaID == m.toReplica, "\(id) finished on \(r.nodeID)/\(r.replicaID), not \(m.toNode)")
            #expect(r.migrations == 1)
            #expect(r.attempts == 1, "never sent again")
        }
        // Each destination saw the request's first token after the move: downtime is measured.
        try bed.cluster.waitFor("downtimes reported", seconds: 10) {
            try bed.client.migrations().migrations.allSatisfy { $0.destinationOutcome == "committed" && $0.downtimeSeconds >= 0 }
        }
        print(MigrationTable.render(try bed.client.migrations()))

        // Bad input, each named; nothing moves.
        func refused(_ request: String, _ node: String, _ fragment: String) {
            do {
                _ = try bed.client.migrate(request: request, to: node)
                Issue.record("migrating \(request) to \(node) was accepted")
            } catch {
                #expect("\(error)".contains(fragment), "\(error)")
            }
        }
        refused("nope", "gpu-a", "no request 'nope'")
        refused("q-live", "gpu-zz", "no node 'gpu-zz'")
        refused("q-live", "gpu-a", "has finished")
        try bed.submit(["q-late"])
        let late = try bed.placed("q-late")
        refused("q-late", late.nodeID, "is already on node")
        let count = try bed.client.migrations().migrations.count
        #expect(count == 3)
    }

    @Test("staging: moved by hand to a replica without room, the request's KV goes through the memory host; it waits there, runs once room comes, and finishes once on the destination")
    func stagedThroughMemoryHost() throws {
        // 0.2 of an A100-80GB leaves about 440 KV blocks: a 6,500-token prompt takes 407 of them.
        let bed = try MigrationBed(name: "migrate-staged", staging: true, memoryUtilization: 0.2)
        defer { bed.shutdown() }
        try bed.submit(["big"], prompt: 6500, decode: 150)
        let big = try bed.placed("big")
        try bed.submit(["q"], prompt: 1024, decode: 600)
        let q = try bed.placed("q")
        #expect(q.nodeID != big.nodeID, "the router sent q to the idle replica")
        usleep(400_000)   // decoding by now
        let m = try bed.client.migrate(request: "q", to: big.nodeID, method: "live")
        let done = try bed.waitEnded(m.migrationID)
        #expect(done.state == "done" && done.staged && done.detail.contains("staged on memory host mem-0"), "\(done.state) \(done.detail)")
        #expect(done.blocks > 0 && done.bytes == UInt64(done.blocks) * 2048, "its blocks as real bytes: \(done.blocks) blocks, \(done.bytes) bytes")
        let finished = try bed.waitFinished(["q", "big"])
        let r = try #require(finished["q"])
        #expect(r.nodeID == big.nodeID && r.migrations == 1 && r.attempts == 1, "finished on \(r.nodeID) after \(r.migrations) moves, \(r.attempts) attempts")
        let after = try #require(try bed.migration(m.migrationID))
        #expect(after.destinationOutcome == "committed" && after.downtimeSeconds > 0, "it waited for room: \(after.downtimeSeconds) s")
    }

    @Test("the destination killed mid-copy: the source keeps the request, which finishes there once")
    func destinationKilled() throws {
        let bed = try MigrationBed.slow(name: "migrate-dst")
        defer { bed.shutdown() }
        let (at, dest, m) = try bed.startSlowMigration()
        usleep(800_000)
        bed.cluster.signal(dest, SIGKILL)
        let ended = try bed.waitEnded(m.migrationID)
        #expect(ended.state == "aborted", "\(ended.state): \(ended.detail)")
        #expect(ended.detail.contains("destination failed") || ended.detail.contains("unreachable"), "\(ended.detail)")
        let r = try #require(try bed.waitFinished(["q"])["q"])
        #expect(r.nodeID == at.nodeID && r.migrations == 0, "finished on \(r.nodeID) after \(r.migrations) migrations")
    }

    @Test("the source killed mid-copy: the destination resumes the request from the KV that arrived, and it finishes there once")
    func sourceKilled() throws {
        let bed = try MigrationBed.slow(name: "migrate-src")
        defer { bed.shutdown() }
        let (at, dest, m) = try bed.startSlowMigration()
        usleep(1_500_000)
        bed.cluster.signal(at.nodeID, SIGKILL)
        let ended = try bed.waitEnded(m.migrationID)
        #expect(ended.state == "resumed-partial", "\(ended.state): \(ended.detail)")
        #expect(ended.blocks > 0, "some KV arrived before the source died")
        let r = try #require(try bed.waitFinished(["q"])["q"])
        #expect(r.nodeID == dest && r.migrations == 1, "finished on \(r.nodeID) after \(r.migrations) migrations")
        #expect(r.attempts == 1, "resumed, not sent again from scratch")
    }

    @Test("the coordinator killed mid-migration: the agents finish it, the restarted coordinator learns the outcome, and the request finishes once")
    func coordinatorKilled() throws {
        // 128 KiB blocks through a 20 MB/s link: the copy takes about a second, while the coordinator is down.
        let bed = try MigrationBed(name: "migrate-coord", network: "network:\n  cloud: {bandwidth: 20MB/s}", kvBytesScale: 1.0 / 64)
        defer { bed.shutdown() }
        try bed.submit(["q"], prompt: 2048, decode: 4000)
        let at = try bed.placed("q")
        usleep(500_000)
        let dest = MigrationBed.other(at.nodeID)
        let m = try bed.client.migrate(request: "q", to: dest, method: "live")
        usleep(200_000)
        bed.cluster.signal("coordinator", SIGKILL)
        usleep(1_500_000)
        try bed.cluster.restart("coordinator")
        let ended = try bed.waitEnded(m.migrationID, seconds: 60)
        #expect(ended.state == "done", "\(ended.state): \(ended.detail) \(ended.sourceOutcome) \(ended.destinationOutcome)")
        let r = try #require(try bed.waitFinished(["q"])["q"])
        #expect(r.nodeID == dest && r.migrations == 1, "finished on \(r.nodeID) after \(r.migrations) migrations")
        #expect(r.attempts == 1, "sent back to its own replica after the restart, not to another: \(r.attempts) attempts")
    }

    @Test("scale-down by migration: a replica the rate no longer needs takes no new requests, its requests move with their KV, and it stops once empty")
    func scaleDown() throws {
        // Two replicas for the rate until 60 trace s (6 s of wall time at 10×, by when the requests
        // are on them); then one is enough, and at 185 s (the 120 s window past) one retires while
        // the long requests still decode on both.
        let bed = try MigrationBed(name: "migrate-retire", timeScale: 10, migrationPolicy: "llumnix",
                                   rateCurve: [RatePoint(time: 0, rps: 40), RatePoint(time: 60, rps: 0.1), RatePoint(time: 185, rps: 0.1)], minReplicas: 1)
        defer { bed.shutdown() }
        let ids = (0..<6).map { "long-\($0)" }
        try bed.submit(ids, prompt: 800, decode: 20000)
        try bed.cluster.waitFor("requests on both replicas", seconds: 20) {
            Set(try bed.client.requests(includeRequests: true).requests.map(\.replicaID).filter { !$0.isEmpty }).count == 2
        }
        var drained: [MigrationRecord] = []
        defer { if drained.isEmpty { print((try? bed.client.migrations().migrations) ?? []); print((try? bed.client.requests(includeRequests: true)).map { "\($0.services) \($0.requests.map { ($0.requestID, $0.replicaID) })" } ?? "") } }
        try bed.cluster.waitFor("a retiring replica drained by migration", seconds: 90) {
            drained = try bed.client.migrations().migrations.filter { $0.reason == "drain" && $0.state == "done" }
            return !drained.isEmpty
        }
        try bed.cluster.waitFor("the retired replica stopped", seconds: 60) { try bed.client.requests().services.first?.ready == 1 }
        let finished = try bed.waitFinished(ids, seconds: 150)
        for (id, r) in finished { #expect(r.attempts == 1, "\(id) was never sent again: \(r.attempts)") }
        #expect(finished.values.contains { $0.migrations == 1 })
    }
}
}
