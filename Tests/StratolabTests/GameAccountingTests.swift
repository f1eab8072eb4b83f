@testable import Experiments
import Foundation
import Testing

@Suite("Game outputs")
struct GameAccountingTests {
    static func window(_ player: String, _ t: Double, _ place: String, _ mbps: Double) -> GameAccounting.Window {
        var w = GameAccounting.Window()
        w.player = player; w.t = t; w.place = place; w.mbpsIn = mbps; w.fps = 60
        return w
    }

    @Test("bandwidth per render site: players' stream rates summed per site and second; local and unplaced windows count for none")
    func bandwidthBySite() {
        var g = GameAccounting()
        g.known = true
        g.windows = [
            Self.window("a", 0.2, "render-edge-0", 4), Self.window("b", 0.7, "render-edge-0", 3.6),   // same second, same site
            Self.window("a", 1.2, "render-edge-0", 4), Self.window("b", 1.7, "render-cloud-0", 6),
            Self.window("c", 0.5, "local", 0.1), Self.window("c", 1.5, "none", 0),
        ]
        let sites = g.bandwidthBySite()
        #expect(sites.map(\.site) == ["render-cloud-0", "render-edge-0"])
        #expect(sites[1].points.map(\.t) == [0, 1])
        #expect(zip(sites[1].points.map(\.mbps), [7.6, 4]).allSatisfy { abs($0 - $1) < 1e-9 })
        #expect(sites[0].points.map(\.t) == [0, 1] && sites[0].points.map(\.mbps) == [0, 6], "a second without players is 0, not a gap")
        let line = GameSection.text(g).first { $0.contains("per render site") }
        #expect(line?.contains("render-edge-0 mean 5.8, peak 7.6 Mbit/s") == true && line?.contains("render-cloud-0 mean 3.0, peak 6.0") == true, "\(line ?? "no line")")
    }
}

@Suite("D2.1 phases over runs")
struct GamePhasesOverRunsTests {
    /// A run of one player: local at `before` FPS (range `spread`) until a switch at 21 s, then 60 FPS at the edge.
    static func run(seed: UInt64, before: Double, spread: Double, switched: Bool = true) -> ExperimentSummary {
        var s = ExperimentSummary(name: "d21", seed: seed, platform: "local", startedAt: Date(timeIntervalSince1970: 0))
        var g = GameAccounting()
        g.known = true
        var p = GameAccounting.Player(); p.id = "player-phone"
        g.players = [p]
        for t in 0..<40 {
            var w = GameAccounting.Window()
            w.player = "player-phone"; w.t = Double(t)
            let remote = switched && t >= 21   // 16 local windows after the 5 s settle: the ± spread averages out
            w.place = remote ? "render-edge-0" : "local"
            w.fps = remote ? 60 : before + (t % 2 == 0 ? spread / 2 : -spread / 2)
            w.memoryGiB = remote ? 0.84 : 1.33; w.mbpsIn = remote ? 4 : 0.3; w.inputMs = remote ? 50 : 47
            g.windows.append(w)
        }
        if switched {
            var x = GameAccounting.Switch(); x.player = "player-phone"; x.from = "local"; x.to = "render-edge-0"; x.t = 21
            g.switches = [x]
        }
        s.game = g
        return s
    }

    @Test("each figure is the mean over the runs with its change's range; a run without a switch is left out and counted")
    func figures() throws {
        let runs = [Self.run(seed: 1, before: 30, spread: 20), Self.run(seed: 2, before: 40, spread: 10), Self.run(seed: 3, before: 30, spread: 10, switched: false)]
        let c = GamePhasesOverRuns.collect(runs)
        #expect(c.runs == 3 && c.missing == ["player-phone": 1])
        let p = try #require(c.players.first)
        let fps = try #require(p.figures.first { $0.name == "FPS" })
        #expect(fps.before == [30, 40] && fps.after == [60, 60] && fps.deltas == [30, 20])
        #expect(fps.agreeing == 2)
        let range = try #require(p.figures.first { $0.name == "FPS range" })
        #expect(range.before == [20, 10] && range.after == [0, 0] && range.agreeing == 2)
        let latency = try #require(p.figures.first { $0.name == "input-to-frame" })
        #expect(latency.agreeing == 2, "47 → 50 ms stays within ±25 %")
        let text = try #require(GamePhasesOverRuns.text(runs))
        #expect(text.contains("FPS            35.0 → 60.0 (+25.0; +20.0 … +30.0)"), "\(text)")
        #expect(text.contains("2/2 rose") && text.contains("no switch in 1 run(s)"))
        #expect(GamePhasesOverRuns.text([runs[0]]) == nil, "one run: the per-run lines say it all")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("phases-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try GamePhasesOverRuns.write(runs, runDirectories: runs.map { dir + "/run-seed-\($0.seed)" }, to: dir, title: "d21")
        let csv = try String(contentsOfFile: dir + "/phases.csv", encoding: .utf8)
        #expect(csv.split(separator: "\n").count == 1 + 5 * 2, "a row per figure and run with a switch")
        let html = try String(contentsOfFile: dir + "/report.html", encoding: .utf8)
        #expect(html.contains("href=\"run-seed-2/report.html\"") && html.contains("30.0 → 60.0; 40.0 → 60.0"))
    }
}
