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
