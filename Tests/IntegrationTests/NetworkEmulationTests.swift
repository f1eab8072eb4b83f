import Cluster
import Foundation
import Protocol
import Testing

extension MultiProcess {
@Suite("Emulated network, multi-process")
struct NetworkEmulationTests {
    static let nodes = """
          - {id: render-far, kind: render, site: {name: edge-1, kind: edge}, render: {slots: 2, gpu: L4}}
          - {id: render-near, kind: render, site: {name: cloud-1, kind: cloud}, render: {slots: 2, gpu: L4}}
        """

    @Test("30 ms of emulated delay shows in the heartbeat round trip; a control file partitions a node until it is removed")
    func delayAndPartition() throws {
        let cluster = try TestCluster(name: "netem", security: .open, nodes: NetworkEmulationTests.nodes,
                                      network: "network:\n  edge-1: {latency_ms: 30}")
        defer { cluster.shutdown() }
        let ms: Int64 = 1_000_000

        // The clock estimator's error bound is half the best round trip of its window: at least
        // 30 ms (30 each way) for the far node, while the near one's stays small.
        var far = NodeStatus(), near = NodeStatus()
        try cluster.waitFor("clock estimates from both nodes, the near one's under 15 ms", seconds: 15) {
            let s = try cluster.status()
            guard let f = s.nodes.first(where: { $0.nodeID == "render-far" }),
                  let n = s.nodes.first(where: { $0.nodeID == "render-near" }),
                  f.hasClock && f.clock.samples >= 3 && n.hasClock && n.clock.samples >= 3 else { return false }
            far = f; near = n
            return n.clock.errorBoundNanos < 15 * ms
        }
        #expect(far.clock.errorBoundNanos >= 29 * ms, "far node's round trip / 2: \(far.clock.errorBoundNanos / ms) ms")
        #expect(far.clock.errorBoundNanos < 500 * ms, "far node's round trip / 2: \(far.clock.errorBoundNanos / ms) ms")
        #expect(far.clock.errorBoundNanos - near.clock.errorBoundNanos >= 20 * ms)

        // Partition the far node through its control file: declared dead (dead-after is 2 s).
        let control = cluster.directory + "/run/net/render-far.json"
        try #"{"partitioned": true}"#.write(toFile: control, atomically: true, encoding: .utf8)
        let deadAfter = try cluster.waitFor("render-far dead", seconds: 10) { try cluster.node("render-far")?.state == .dead }
        #expect(deadAfter < 8)
        #expect(try cluster.node("render-near")?.state == .alive, "the other node is untouched")

        // Heal: with the file gone the agent is back on the configured conditions and registers again.
        try FileManager.default.removeItem(atPath: control)
        try cluster.waitFor("render-far alive again", seconds: 10) {
            let n = try cluster.node("render-far")
            return n?.state == .alive && (n?.incarnation ?? 0) >= 2
        }
        let log = try String(contentsOfFile: cluster.directory + "/run/logs/render-far.log", encoding: .utf8)
        #expect(log.contains("to=partitioned"), "the agent logged the partition")
        #expect(log.contains("the configured conditions to=delay 30 ms"), "and the return to the configured 30 ms")
        try cluster.waitFor("a clock estimate after healing", seconds: 10) {
            guard let f = try cluster.node("render-far"), f.hasClock else { return false }
            return f.clock.errorBoundNanos >= 29 * ms
        }
    }
}
}
