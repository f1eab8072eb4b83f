import Cluster
import Experiments
import Foundation
import Protocol
import Testing

extension MultiProcess {
@Suite("Live fault injection (strato fault)")
struct FaultCommandTests {
    /// Runs `strato ARGS` to completion; returns its exit status and output.
    func strato(_ cluster: TestCluster, _ args: [String]) throws -> (Int32, String) {
        try TestCluster.runStrato(args, log: cluster.directory + "/cli-\(UUID().uuidString.prefix(6)).log", newSession: false)
    }

    func state(_ cluster: TestCluster, _ node: String) -> NodeState? { try? cluster.node(node)?.state }

    func waitFor(_ cluster: TestCluster, _ node: String, _ want: Set<NodeState>, seconds: Double) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if let s = state(cluster, node), want.contains(s) { return true }
            usleep(100_000)
        }
        return false
    }

    @Test("strato fault inject/list/heal on a running testbed: a partition without --for stays until healed, a pause with --for heals itself, both recorded as trace windows")
    func liveFaults() throws {
        let cluster = try TestCluster(name: "faults", security: .open)
        defer { cluster.shutdown() }
        let run = cluster.directory + "/run"

        let (rc, out) = try strato(cluster, ["fault", "inject", "partition", "render-edge", "--run-dir", run])
        #expect(rc == 0, "\(out)")
        #expect(out.contains("started live-") && out.contains("strato fault heal"))
        #expect(waitFor(cluster, "render-edge", [.dead], seconds: 8), "a partitioned node is declared dead")
        let (_, list) = try strato(cluster, ["fault", "list", "--run-dir", run])
        #expect(list.contains("partition render-edge"), "\(list)")
        let (hrc, healed) = try strato(cluster, ["fault", "heal", "--all", "--run-dir", run])
        #expect(hrc == 0 && healed.contains("heal: partition render-edge"), "\(healed)")
        #expect(waitFor(cluster, "render-edge", [.alive], seconds: 10), "healed, it comes back")

        // A pause with --for: the command blocks for the window, then resumes the node.
        let (prc, paused) = try strato(cluster, ["fault", "inject", "pause", "kind:memory", "--for", "3", "--run-dir", run])
        #expect(prc == 0 && paused.contains("resume: pause mem-a"), "\(paused)")
        #expect(waitFor(cluster, "mem-a", [.alive], seconds: 10))

        // Bad input is named.
        let (brc, bad) = try strato(cluster, ["fault", "inject", "kill", "gpu-zz", "--run-dir", run])
        #expect(brc != 0 && bad.contains("unknown node 'gpu-zz'"), "\(bad)")

        // Each start and heal is a trace event in the testbed's spool folder, paired by fault id.
        let merged = try MergedTrace.load(directory: run + "/trace")
        #expect(merged.faults.count == 2, "\(merged.faults)")
        #expect(merged.faults.allSatisfy { $0.endNanos != nil })
        #expect(Set(merged.faults.map(\.action)) == ["partition", "pause"])
    }
}
}
