import Cluster
import Experiments
import Features
import Foundation
import Protocol
import Testing

/// A world server, an edge and a cloud render site and three players, all real processes with
/// CURVE on: two players stream from the edge (it has two slots; the third stays local), the edge
/// site is killed, and every player keeps receiving frames — the two fall back
/// to local rendering on their own, well within the failure detector's time.
@Suite("Game on a testbed", .serialized)
struct GameTestbedTests {
    @Test("the edge render site killed: its players fall back and nobody is left without frames")
    func edgeKilled() throws {
        let nodes = """
              - {id: world-0, kind: world, site: cloud, world: {tick_hz: 20, entities: 16}}
              - {id: render-edge, kind: render, site: edge, render: {slots: 2, gpu: L4}}
              - {id: render-cloud, kind: render, site: cloud, render: {slots: 8, gpu: A10}}
              - {id: p, kind: player, site: device, virtual: 3, player: {device: phone, network: wifi, view_distance: 6}}
            """
        let cluster = try TestCluster(name: "game", security: .curve, nodes: nodes,
                                      coordinatorExtra: "  render_policy: scripted\n  render_script: [\"2 * edge\"]", timeout: 60)
        defer { cluster.shutdown() }
        let client = try cluster.client()
        defer { client.close() }
        func game() throws -> GameApiReply { try client.game(timeoutMs: 3000) }
        try cluster.waitFor("two players streaming from the edge", seconds: 40) {
            try game().players.filter { $0.report.place == "render-edge" && !$0.report.switching }.count == 2
        }
        let before = try game()
        #expect(before.players.count == 3)
        #expect(before.sites.first { $0.site == "render-edge" }?.used == 2)
        // The coordinator counts the edge's slots: the third player is not sent there and stays local.
        #expect(before.players.filter { $0.report.place == "local" }.count == 1)
        let streamed = Set(before.players.filter { $0.report.place == "render-edge" }.map(\.player))

        cluster.signal("render-edge", SIGKILL)
        try cluster.waitFor("every player rendering locally", seconds: 20) {
            try game().players.allSatisfy { $0.report.place == "local" && !$0.report.switching }
        }
        // Frames keep coming for everyone after the fall-back.
        let frames = Dictionary(uniqueKeysWithValues: try game().players.map { ($0.player, $0.report.frames) })
        try cluster.waitFor("every player's frames growing", seconds: 20) {
            try game().players.allSatisfy { $0.report.frames > (frames[$0.player] ?? 0) + 20 && $0.report.frozenMs < 1000 }
        }
        let after = try game()
        let fallbacks = after.switches.filter(\.forced)
        #expect(Set(fallbacks.map(\.player)) == streamed, "exactly the players the edge served fell back")
        for f in fallbacks {
            #expect(f.from == "render-edge" && f.to == "local")
            #expect(f.gapMs < 2000, "fell back within the failure detector's time: \(f.gapMs) ms")
        }
        for p in after.players { #expect(p.report.longestGapMs < 2000, "\(p.player) went \(p.report.longestGapMs) ms without frames") }
        #expect(after.world.players == 3)
        #expect(after.world.tick > 40)
        // The status table names every player and where it renders.
        let table = GameTable.render(after)
        for p in after.players { #expect(table.contains(p.player)) }
    }
}
