import Cluster
import Foundation
import Protocol
import Testing
import Wire

/// Multi-process tests: real coordinator and agent processes, real signals. They run one at a
/// time (each starts a whole testbed; .serialized applies to every nested suite) and stop every
/// process they start, pass or fail.
@Suite("Multi-process", .serialized)
enum MultiProcess {}

extension MultiProcess {
@Suite("A live testbed")
struct LiveTestbedTests {
    @Test("a coordinator and agents of every kind register and are all alive")
    func allKindsAlive() throws {
        let cluster = try TestCluster(name: "kinds")
        defer { cluster.shutdown() }
        let s = try cluster.status()
        #expect(s.secure)
        #expect(s.nodes.count == 5)
        #expect(s.nodes.allSatisfy { $0.state == .alive && $0.incarnation == 1 })
        #expect(Set(s.nodes.map(\.kind)) == [.gpu, .memory, .render])
        let gpu = try #require(s.nodes.first { $0.nodeID == "gpu-a" })
        #expect(gpu.capabilities.gpu.model == "A100-80GB")
        #expect(gpu.capabilities.gpu.count == 4)
        #expect(gpu.capabilities.gpu.emulated)
        let mem = try #require(s.nodes.first { $0.nodeID == "mem-a" })
        #expect(mem.capabilities.memory.tiers.map(\.kind) == [.dram, .cxl, .nvme])
        #expect(mem.capabilities.memory.tiers.allSatisfy { $0.bandwidthGbps > 0 && $0.latencyNs > 0 })
        #expect(mem.capabilities.memory.tiers[1].emulated)
        let edge = try #require(s.nodes.first { $0.nodeID == "render-edge" })
        #expect(edge.site.kind == .edge && edge.capabilities.render.renderSlots == 4)
        // Heartbeats carry telemetry and the agents have a clock estimate.
        try cluster.waitFor("clock estimates", seconds: 5) {
            try cluster.status().nodes.allSatisfy { $0.hasClock && $0.clock.samples > 0 && $0.telemetry.processRssBytes > 0 }
        }
    }

    @Test("an agent killed with SIGKILL is declared dead within 3 s")
    func killedAgentIsDead() throws {
        let cluster = try TestCluster(name: "kill")
        defer { cluster.shutdown() }
        cluster.signal("gpu-b", SIGKILL)
        // Wait well past the target so the bound below is what is tested, not waitFor's timeout.
        let took = try cluster.waitFor("gpu-b dead", seconds: 15) { try cluster.node("gpu-b")?.state == .dead }
        #expect(took <= 3, "declared dead \(took) s after the kill")
        // And not long before the detector's 2 s timeout could have run out: the silence counts
        // from the last heartbeat, due every 200 ms (1 s leaves room for a late one on a busy box).
        #expect(took >= 1.0, "declared dead only \(took) s after the kill, well before its 2 s timeout")
        // The others are untouched.
        #expect(try cluster.status().nodes.filter { $0.state == .alive }.count == 4)
    }

    @Test("a paused agent goes suspect then dead, and on resume re-registers with a higher incarnation")
    func pausedAgentRejoins() throws {
        let cluster = try TestCluster(name: "pause")
        defer { cluster.shutdown() }
        cluster.signal("mem-a", SIGSTOP)
        var seen: [NodeState] = []
        try cluster.waitFor("mem-a dead", seconds: 6) {
            let state = try cluster.node("mem-a")?.state ?? .unspecified
            if seen.last != state { seen.append(state) }
            return state == .dead
        }
        #expect(seen.contains(.suspect))
        #expect(seen.firstIndex(of: .suspect)! < seen.firstIndex(of: .dead)!)
        cluster.signal("mem-a", SIGCONT)
        try cluster.waitFor("mem-a alive again", seconds: 8) {
            let n = try cluster.node("mem-a")
            return n?.state == .alive && (n?.incarnation ?? 0) >= 2
        }
        #expect(try cluster.node("mem-a")?.incarnation == 2)
    }

    @Test("a coordinator killed with SIGKILL and restarted on its state directory loses nothing")
    func coordinatorRestart() throws {
        let cluster = try TestCluster(name: "restart")
        defer { cluster.shutdown() }
        let before = try cluster.status()
        // Durable operator state: a label set through the command path.
        let c = try cluster.client()
        var labels = Stratolab_V1_SetLabels(); labels.labels = ["zone": "z1"]
        var command = Command(); command.setLabels = labels
        _ = try c.command(node: "gpu-a", command)
        c.close()
        try cluster.waitFor("label applied", seconds: 5) { try cluster.node("gpu-a")?.labels["zone"] == "z1" }

        cluster.signal("coordinator", SIGKILL)
        usleep(300_000)
        try cluster.restart("coordinator")
        try cluster.waitFor("every node back", seconds: 15) {
            let s = try cluster.status()
            return s.nodes.count == before.nodes.count && s.nodes.allSatisfy { $0.state == .alive }
        }
        let after = try cluster.status()
        #expect(after.coordinatorEpoch == before.coordinatorEpoch + 1)
        // Same agents, same lives: incarnations unchanged, registrations and labels kept.
        for n in before.nodes {
            let m = try #require(after.nodes.first { $0.nodeID == n.nodeID })
            #expect(m.incarnation == n.incarnation, "incarnation of \(n.nodeID)")
            #expect(m.registeredAtUnixNanos == n.registeredAtUnixNanos)
        }
        #expect(after.nodes.first { $0.nodeID == "gpu-a" }?.labels["zone"] == "z1")
        let counters = Dictionary(uniqueKeysWithValues: after.counters.map { ($0.name, $0.value) })
        #expect((counters["registrations"] ?? 0) >= 5, "counters survive the restart")
        try cluster.waitFor("every agent reconciled with the new coordinator", seconds: 5) {
            try cluster.status().counters.first { $0.name == "reconciliations" }.map { $0.value >= 5 } ?? false
        }
    }

    @Test("a command to a node that is down is kept and delivered when it is back")
    func commandSurvivesNodeOutage() throws {
        let cluster = try TestCluster(name: "cmd")
        defer { cluster.shutdown() }
        cluster.signal("render-cloud", SIGSTOP)
        try cluster.waitFor("render-cloud dead", seconds: 6) { try cluster.node("render-cloud")?.state == .dead }
        let c = try cluster.client()
        var labels = Stratolab_V1_SetLabels(); labels.labels = ["tier": "gold"]
        var command = Command(); command.setLabels = labels
        let reply = try c.command(node: "render-cloud", command)
        c.close()
        #expect(reply.accepted)
        #expect(try cluster.status().pendingCommands == 1)
        cluster.signal("render-cloud", SIGCONT)
        try cluster.waitFor("label delivered after resume", seconds: 10) {
            try cluster.node("render-cloud")?.labels["tier"] == "gold"
        }
        #expect(try cluster.status().pendingCommands == 0)
    }

    @Test("an agent with an unknown CURVE key is refused and never registers")
    func unknownKeyRejected() throws {
        let cluster = try TestCluster(name: "curve", nodes: "  - {id: gpu-ok, kind: gpu, gpu: {model: V100, count: 1}}")
        defer { cluster.shutdown() }
        let rogueKeys = cluster.directory + "/rogue-keys"
        try KeyDirectory.generate(at: rogueKeys)
        try cluster.spawn("rogue", ["agent", "gpu", "--id", "rogue", "--gpu-model", "T4", "--endpoint", cluster.bed.endpoint,
                                    "--keys", cluster.bed.keysDirectory!, "--client-key", rogueKeys + "/agent.key"])
        try cluster.waitFor("the coordinator refused the rogue key", seconds: 10) {
            try cluster.status().counters.first { $0.name == "rejected_curve_key" }.map { $0.value > 0 } ?? false
        }
        usleep(1_000_000)
        let s = try cluster.status()
        #expect(!s.nodes.contains { $0.nodeID == "rogue" })
        #expect(s.nodes.first { $0.nodeID == "gpu-ok" }?.state == .alive)
    }
}
}
