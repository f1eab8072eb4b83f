import XCTest
@testable import Features
import Scheduling

final class VoxelWorldTests: XCTestCase {
    func testBlockEditsAreVisibleAndCounted() throws {
        var w = VoxelWorld(seed: 7, tickHz: 20, entities: 0)
        w.join("a", viewDistance: 4)
        let p = w.players["a"]!
        let x = Int32(p.x.rounded()), z = Int32(p.z.rounded())
        let ground = w.terrainHeight(x: x, z: z)
        XCTAssertEqual(w.block(x: x, y: ground - 1, z: z), 1, "below the terrain height is stone")
        XCTAssertEqual(w.block(x: x, y: ground + 5, z: z), 0, "above it is air")
        try w.apply(PlayerAction(edit: BlockEdit(x: x, y: ground + 5, z: z, kind: 3)), for: "a")
        try w.apply(PlayerAction(edit: BlockEdit(x: x, y: ground - 1, z: z, kind: 0)), for: "a")
        XCTAssertEqual(w.block(x: x, y: ground + 5, z: z), 3)
        XCTAssertEqual(w.block(x: x, y: ground - 1, z: z), 0)
        XCTAssertEqual(w.editCount, 2)
        let v = w.step()["a"]!
        XCTAssertEqual(v.editsInView, 2, "both edits are in the player's view this tick")
        XCTAssertEqual(w.step()["a"]!.editsInView, 0, "and only in that tick's update")
    }

    func testBadEditsAreNamed() {
        var w = VoxelWorld(seed: 1, entities: 0)
        w.join("a")
        XCTAssertThrowsError(try w.apply(PlayerAction(edit: BlockEdit(x: 0, y: 500, z: 0, kind: 1)), for: "a")) {
            XCTAssertTrue("\($0)".contains("outside the world"))
        }
        XCTAssertThrowsError(try w.apply(PlayerAction(edit: BlockEdit(x: 10_000, y: 60, z: 0, kind: 1)), for: "a")) {
            XCTAssertTrue("\($0)".contains("out of the player's reach"))
        }
        XCTAssertThrowsError(try w.apply(PlayerAction(), for: "ghost")) { XCTAssertTrue("\($0)".contains("no player 'ghost'")) }
        XCTAssertEqual(w.editCount, 0)
    }

    func testChunkVisibilityIsADiscAndOnlyNewChunksAreSent() throws {
        var w = VoxelWorld(seed: 3, entities: 0)
        w.join("a", viewDistance: 2)
        // Radius 2: 5 × 5 square minus the 4 corners whose dx² + dz² > 4 … = 13 chunks.
        XCTAssertEqual(w.visibleChunks(of: w.players["a"]!).count, 13)
        let first = w.step()["a"]!
        XCTAssertEqual(first.newChunks, 13, "a new renderer gets every chunk in view")
        XCTAssertEqual(w.step()["a"]!.newChunks, 0, "standing still, nothing new")
        // Walk one chunk (16 blocks) east at 16 blocks/s for 20 ticks: a new column of chunks comes in.
        var fresh = 0
        for _ in 0..<20 { try w.apply(PlayerAction(heading: 0, speed: 16), for: "a"); fresh += w.step()["a"]!.newChunks }
        XCTAssertEqual(fresh, 5, "one chunk east brings the disc's 5-chunk eastern edge")
        w.resetView("a")
        XCTAssertEqual(w.step()["a"]!.newChunks, 13, "a renderer that changed gets them all again")
    }

    func testChunksAreSentAFewPerTickNearestFirst() {
        var w = VoxelWorld(seed: 2, entities: 0)
        w.join("a", viewDistance: 8)
        let total = w.visibleChunks(of: w.players["a"]!).count
        var sent: [Int] = []
        while sent.reduce(0, +) < total { sent.append(w.step()["a"]!.newChunks) }
        XCTAssertEqual(sent.first, 16, "a cold renderer gets 16 chunks a tick")
        XCTAssertEqual(sent.reduce(0, +), total, "until its whole view (\(total) chunks) is there")
        XCTAssertEqual(sent.count, (total + 15) / 16)
        XCTAssertEqual(w.step()["a"]!.newChunks, 0)
    }

    func testEntitiesMoveAndAreCountedInView() {
        var w = VoxelWorld(seed: 5, tickHz: 20, entities: 200, spawnRadius: 40)
        w.join("a", viewDistance: 8)
        let before = w.entities
        let v = w.step()["a"]!
        XCTAssertNotEqual(before, w.entities)
        XCTAssertEqual(v.visibleEntities, 200, "every entity spawned within 40 blocks is within 8 chunks")
    }

    func testSameSeedSameWorld() {
        var a = VoxelWorld(seed: 11), b = VoxelWorld(seed: 11)
        a.join("p"); b.join("p")
        for _ in 0..<10 { XCTAssertEqual(a.step(), b.step()) }
    }

    func testMeterstickVariabilityClampsAtTheInterval() {
        var s = TickStats(tickHz: 20)   // 50 ms interval
        for t in [0.010, 0.030, 0.120, 0.020] { s.record(seconds: t) }
        // |30−10| + |50−30| (120 clamped to 50) + |20−50| = 20 + 20 + 30 = 70 ms.
        XCTAssertEqual(s.variability, 0.070, accuracy: 1e-9)
        XCTAssertEqual(s.overruns, 1)
        XCTAssertEqual(s.percentile(100), 0.120, accuracy: 1e-12)
    }
}

final class RenderSwitchTests: XCTestCase {
    func testMakeBeforeBreakToASite() {
        var s = RenderSwitch(start: .local, warmupTimeout: 5)
        XCTAssertEqual(s.handle(.want(.site("edge"), at: 1)), [.start(.site("edge"))])
        XCTAssertEqual(s.showing, .local, "local keeps rendering while the site warms up")
        XCTAssertEqual(s.handle(.firstFrame(.local, at: 1.1)), [], "a stray local frame changes nothing")
        XCTAssertEqual(s.handle(.firstFrame(.site("edge"), at: 1.4)),
                       [.show(.site("edge")), .stop(.local), .completed(from: .local, to: .site("edge"), startedAt: 1, forced: false)])
        XCTAssertEqual(s.showing, .site("edge"))
        XCTAssertEqual(s.completed, 1)
    }

    func testWarmupRefusedOrTimedOutRollsBack() {
        var s = RenderSwitch(start: .local, warmupTimeout: 5)
        _ = s.handle(.want(.site("edge"), at: 0))
        XCTAssertEqual(s.handle(.failed(.site("edge"), reason: "no slot", at: 0.2)),
                       [.stop(.site("edge")), .rolledBack(from: .local, target: .site("edge"), reason: "no slot")])
        XCTAssertEqual(s.state, .steady(.local))
        _ = s.handle(.want(.site("cloud"), at: 1))
        XCTAssertEqual(s.handle(.tick(at: 5.9)), [])
        XCTAssertEqual(s.handle(.tick(at: 6)).first, .stop(.site("cloud")))
        XCTAssertEqual(s.state, .steady(.local))
        XCTAssertEqual(s.rolledBack, 2)
    }

    func testSiteDiesAfterTheSwitchFallsBackToLocal() {
        var s = RenderSwitch(start: .site("edge"))
        XCTAssertEqual(s.handle(.failed(.site("edge"), reason: "silent", at: 3)),
                       [.start(.local), .show(.local), .stop(.site("edge")), .completed(from: .site("edge"), to: .local, startedAt: 3, forced: true)])
        XCTAssertEqual(s.forced, 1)
        XCTAssertEqual(s.handle(.failed(.site("edge"), reason: "late", at: 4)), [], "a second failure of the old site is nothing")
    }

    func testCurrentSiteDiesDuringASwitchToAnother() {
        var s = RenderSwitch(start: .site("edge"))
        _ = s.handle(.want(.site("cloud"), at: 1))
        let d = s.handle(.failed(.site("edge"), reason: "dead", at: 1.5))
        XCTAssertEqual(s.state, .steady(.local), "with no frames at all, local is the only safe place")
        XCTAssertTrue(d.contains(.start(.local)) && d.contains(.stop(.site("cloud"))) && d.contains(.stop(.site("edge"))))
    }

    func testCurrentSiteDiesWhileSwitchingToLocal() {
        var s = RenderSwitch(start: .site("edge"))
        XCTAssertEqual(s.handle(.want(.local, at: 1)), [.start(.local)])
        let d = s.handle(.failed(.site("edge"), reason: "dead", at: 1.2))
        XCTAssertEqual(d, [.show(.local), .stop(.site("edge")), .completed(from: .site("edge"), to: .local, startedAt: 1.2, forced: true)])
        XCTAssertEqual(s.state, .steady(.local))
    }

    func testPolicyChangesItsMindMidSwitchAndDisconnect() {
        var s = RenderSwitch(start: .local)
        _ = s.handle(.want(.site("edge"), at: 0))
        XCTAssertEqual(s.handle(.want(.site("cloud"), at: 0.5)),
                       [.stop(.site("edge")), .rolledBack(from: .local, target: .site("edge"), reason: "the policy chose cloud instead"), .start(.site("cloud"))])
        XCTAssertEqual(s.handle(.disconnected(at: 1)), [.stop(.local), .stop(.site("cloud"))])
        XCTAssertNil(s.showing)
        XCTAssertEqual(s.handle(.want(.local, at: 2)), [], "a player that left does nothing")
    }
}

final class RenderPolicyTests: XCTestCase {
    func player(_ id: String, at place: String = "local", fps: Double = 25, range: Double = 30, battery: Double = 1, mbps: Double = 100, rtt: Double = 10, since: Double = 0) -> PlayerSnapshot {
        var p = PlayerSnapshot(id: id, device: "phone", network: "wifi", current: place)
        p.fps = fps; p.fpsRange = range; p.localFPSEstimate = fps; p.localRangeEstimate = range
        p.battery = battery; p.bandwidthMbps = mbps; p.accessRTTMs = rtt; p.lastSwitchAt = since
        return p
    }

    func testStaticPoliciesAndFallBack() throws {
        let sites = [RenderSiteSnapshot(id: "e", kind: "edge", slots: 1, used: 0), RenderSiteSnapshot(id: "c", kind: "cloud", slots: 8, used: 0)]
        let edge = try RenderPolicies.named("edge").decide(players: [player("a"), player("b")], sites: sites, now: 0)
        XCTAssertEqual(edge.map(\.place), ["e"], "one edge slot: a gets it, b stays local")
        let cloud = try RenderPolicies.named("cloud").decide(players: [player("a"), player("b", at: "e")], sites: sites, now: 0)
        XCTAssertEqual(cloud.map(\.place), ["c", "c"])
        var dead = sites; dead[0].alive = false
        let back = try RenderPolicies.named("edge").decide(players: [player("a", at: "e")], sites: dead, now: 0)
        XCTAssertEqual(back, [RenderDecision(player: "a", place: "local", reason: "no edge site with a free slot: local fall-back")])
        XCTAssertThrowsError(try RenderPolicies.named("magic")) { XCTAssertTrue("\($0)".contains("unknown render policy 'magic'")) }
    }

    func testScriptedSwitchesAtTheirTimes() throws {
        let p = try RenderPolicies.named("scripted", script: ["10 * edge", "20 b local"])
        let sites = [RenderSiteSnapshot(id: "e", kind: "edge", slots: 4, used: 0)]
        XCTAssertEqual(p.decide(players: [player("a"), player("b")], sites: sites, now: 9), [])
        XCTAssertEqual(p.decide(players: [player("a"), player("b")], sites: sites, now: 10).map(\.place), ["e", "e"])
        XCTAssertEqual(p.decide(players: [player("a", at: "e"), player("b", at: "e")], sites: sites, now: 20).map(\.player), ["b"])
        XCTAssertThrowsError(try RenderPolicies.named("scripted", script: ["soon * edge"])) { XCTAssertTrue("\($0)".contains("AT_SECONDS PLAYER PLACE")) }
    }

    func testAdaptiveMovesALowFPSPlayerAndKeepsAGoodOne() {
        let sites = [RenderSiteSnapshot(id: "e", kind: "edge", slots: 4, used: 0, rttMs: 8)]
        let d = AdaptiveRender().decide(players: [player("slow", fps: 25, range: 30), player("fast", fps: 60, range: 2)], sites: sites, now: 30)
        XCTAssertEqual(d.map(\.player), ["slow"])
        XCTAssertEqual(d.first?.place, "e")
    }

    func testAdaptiveHysteresisAndDwell() {
        let sites = [RenderSiteSnapshot(id: "e", kind: "edge", slots: 4, used: 0, rttMs: 8)]
        // Local 55 FPS with a small range is within the margin of a stream's 60: stay.
        XCTAssertEqual(AdaptiveRender().decide(players: [player("a", fps: 55, range: 4)], sites: sites, now: 30), [])
        // A clear gain, but it switched 3 s ago: it stays for the dwell time.
        XCTAssertEqual(AdaptiveRender().decide(players: [player("a", fps: 20, range: 30, since: 27)], sites: sites, now: 30), [])
        XCTAssertEqual(AdaptiveRender().decide(players: [player("a", fps: 20, range: 30, since: 15)], sites: sites, now: 30).count, 1)
    }

    func testAdaptiveGivesScarceEdgeSlotsToWhoGainsMost() {
        let sites = [RenderSiteSnapshot(id: "e", kind: "edge", slots: 1, used: 0, rttMs: 8),
                     RenderSiteSnapshot(id: "c", kind: "cloud", slots: 4, used: 0, rttMs: 120)]
        let players = [player("meh", fps: 40, range: 10), player("worst", fps: 15, range: 40)]
        let d = AdaptiveRender().decide(players: players, sites: sites, now: 30)
        XCTAssertEqual(d.first { $0.player == "worst" }?.place, "e", "the edge slot goes to the player who gains most")
        // The cloud is too far (latency over budget) to help the other one.
        XCTAssertNil(d.first { $0.player == "meh" })
    }

    func testAdaptiveLeavesADeadSiteAtOnceAndRespectsBandwidth() {
        var sites = [RenderSiteSnapshot(id: "e", kind: "edge", slots: 4, used: 1, rttMs: 8)]
        sites[0].alive = false
        let d = AdaptiveRender().decide(players: [player("a", at: "e", fps: 60, range: 1, since: 29)], sites: sites, now: 30)
        XCTAssertEqual(d.map(\.place), ["local"], "a dead site is left at once, dwell or not")
        sites[0].alive = true
        XCTAssertEqual(AdaptiveRender().decide(players: [player("thin", fps: 15, range: 40, mbps: 1)], sites: sites, now: 30), [], "1 Mbit/s cannot carry a stream")
    }

    func testAdaptiveLearnsFromMeasuredLatency() {
        let sites = [RenderSiteSnapshot(id: "e", kind: "edge", slots: 4, used: 0, rttMs: 8),
                     RenderSiteSnapshot(id: "c", kind: "cloud", slots: 4, used: 1, rttMs: 30)]
        // At the cloud the estimate said ~60 ms; the player measures 240 ms: it moves (to the edge).
        var p = player("a", at: "c", fps: 60, range: 2)
        p.localFPSEstimate = 30; p.localRangeEstimate = 20
        XCTAssertEqual(AdaptiveRender().decide(players: [p], sites: sites, now: 30), [], "estimates alone: the cloud is fine")
        p.measuredLatencyMs = ["c": 240]
        XCTAssertEqual(AdaptiveRender().decide(players: [p], sites: sites, now: 30).map(\.place), ["e"])
        // Once the edge is known to be slow too, local wins.
        p.measuredLatencyMs["e"] = 260
        XCTAssertEqual(AdaptiveRender().decide(players: [p], sites: sites, now: 30).map(\.place), ["local"])
    }

    func testAdaptiveLowBatteryFavoursOffload() {
        let sites = [RenderSiteSnapshot(id: "e", kind: "edge", slots: 4, used: 0, rttMs: 8)]
        // 52 FPS, range 6: not worth a switch on a full battery; on 10 % it is.
        XCTAssertEqual(AdaptiveRender().decide(players: [player("a", fps: 52, range: 6)], sites: sites, now: 30), [])
        XCTAssertEqual(AdaptiveRender().decide(players: [player("a", fps: 52, range: 6, battery: 0.1)], sites: sites, now: 30).map(\.place), ["e"])
    }
}

final class FrameModelTests: XCTestCase {
    func testFasterGPUsRenderFasterAndLoadSlowsDown() {
        let v = PlayerView(tick: 1, x: 0, z: 0, visibleChunks: 197, visibleEntities: 4, complexity: 1.5, newChunks: 0, editsInView: 0, lastInputSequence: 0, lastInputSentNanos: 0)
        func median(_ tflops: Double, load: Double) -> Double {
            var r = SplitMix64(seed: 1)
            return PlayerMeter.percentile((0..<501).map { _ in FrameModel.localFrameMs(v, tflops: tflops, otherLoad: load, rng: &r) }, 50)
        }
        XCTAssertLessThan(median(2.6, load: 0.2), median(1.2, load: 0.2))
        XCTAssertLessThan(median(1.2, load: 0.0), median(1.2, load: 0.6))
        XCTAssertGreaterThanOrEqual(median(67, load: 0), 1000 / 60 - 1e-9, "nothing shows faster than the display")
        XCTAssertLessThan(FrameModel.remoteRenderMs(v, siteTFLOPS: 30.3, slots: 8), 1000 / 60, "an L4 slot of 8 renders the view at 60 FPS")
        XCTAssertEqual(FrameModel.streamMbps(linkMbps: 100), 4)
        XCTAssertEqual(FrameModel.streamMbps(linkMbps: 5), 3, accuracy: 1e-9)
    }

    func testMeterWindowsRangeAndGap() {
        var m = PlayerMeter(start: 0)
        for i in 0..<30 { m.frame(at: Double(i) / 30) }          // 30 FPS in window 0
        for i in 0..<60 { m.frame(at: 1 + Double(i) / 60) }      // 60 FPS in window 1
        m.frame(at: 2.5)                                          // a 0.52 s gap
        m.roll(to: 3)
        XCTAssertEqual(m.windows.map(\.fps), [30, 60, 1])
        XCTAssertEqual(m.fps(from: 0, to: 2).range, 30)
        XCTAssertEqual(m.longestGap, 2.5 - (1 + 59.0 / 60), accuracy: 1e-9)
        XCTAssertEqual(m.framesShown, 91)
    }

    func testCatalogueHasSourcesAndNamedErrors() {
        for d in DeviceCatalog.devices { XCTAssertFalse(d.source.isEmpty); XCTAssertNotNil(DeviceCatalog.network(named: d.defaultNetwork)) }
        XCTAssertNil(DeviceCatalog.device(named: "toaster"))
        XCTAssertEqual(DeviceCatalog.network(named: "Wi-Fi")?.name, "wifi")
        XCTAssertEqual(Behaviour.named("Random-Walk"), .randomWalk)
    }
}

final class GameTwinTests: XCTestCase {
    func setup(_ device: String, load: Double = 0.3) -> PlayerSetup {
        var s = PlayerSetup(device: DeviceCatalog.device(named: device)!, network: DeviceCatalog.network(named: "wifi")!, behaviour: .randomWalk)
        s.otherLoad = load
        return s
    }

    func testScriptedSwitchRaisesFPSAndAKilledSiteMakesPlayersFallBack() throws {
        let players = (0..<4).map { ("p-\($0)", setup("phone", load: 0.45)) }
        let sites = [GameTwinModel.Site(id: "edge", kind: "edge", slots: 4, gpuModel: "L4", oneWayMs: 3.75)]
        var settings = GameTwinModel.Settings()
        settings.seconds = 60
        settings.siteDown = [("edge", 40, 50)]
        let r = GameTwinModel.run(players: players, sites: sites, policy: try RenderPolicies.named("scripted", script: ["20 * edge"]), settings: settings)
        XCTAssertEqual(r.switches.filter { !$0.forced && !$0.rolledBack && $0.t < 40 }.count, 4, "each player switched once to the edge")
        XCTAssertEqual(r.switches.filter { !$0.forced && !$0.rolledBack && $0.t >= 50 }.count, 4, "and again once it was back (the script still says edge)")
        XCTAssertEqual(r.switches.filter(\.forced).count, 4, "and fell back when it died")
        for (id, _) in players {
            let w = r.windows[id]!
            let before = w.filter { $0.t >= 5 && $0.t < 20 }.map(\.fps), after = w.filter { $0.t >= 25 && $0.t < 40 }.map(\.fps)
            XCTAssertGreaterThan(after.reduce(0, +) / Double(after.count), before.reduce(0, +) / Double(before.count) + 10, "\(id): streaming beats this phone's local FPS")
            XCTAssertTrue(w.filter { $0.t >= 42 && $0.t < 50 }.allSatisfy { $0.place == "local" && $0.fps > 0 }, "\(id) renders locally while the site is down")
        }
        // Deterministic: the same inputs, the same run.
        let again = GameTwinModel.run(players: players, sites: sites, policy: try RenderPolicies.named("scripted", script: ["20 * edge"]), settings: settings)
        XCTAssertEqual(again.windows, r.windows)
        // Another run seed (a repetition): the players' own randomness differs, the script does not.
        var other = settings
        other.runSeed = 1
        let repeated = GameTwinModel.run(players: players, sites: sites, policy: try RenderPolicies.named("scripted", script: ["20 * edge"]), settings: other)
        XCTAssertNotEqual(repeated.windows, r.windows, "a different run seed gives a different run")
        XCTAssertEqual(repeated.switches.filter { !$0.forced && !$0.rolledBack }.count, r.switches.filter { !$0.forced && !$0.rolledBack }.count)
    }

    func testSlotsBoundWhereThePolicyPutsPlayers() {
        let players = (0..<6).map { ("p-\($0)", setup("phone", load: 0.5)) }
        let sites = [GameTwinModel.Site(id: "edge", kind: "edge", slots: 2, gpuModel: "L4", oneWayMs: 3.75)]
        var settings = GameTwinModel.Settings()
        settings.seconds = 40
        let r = GameTwinModel.run(players: players, sites: sites, policy: AdaptiveRender(), settings: settings)
        for t in stride(from: 15.0, to: 40, by: 1) {
            let at = r.windows.values.compactMap { $0.first { $0.t == t } }.filter { $0.place == "edge" }.count
            XCTAssertLessThanOrEqual(at, 2, "never more players at the edge than its slots (t = \(t))")
        }
        XCTAssertEqual(r.windows.values.compactMap { $0.first { $0.t == 30 } }.filter { $0.place == "edge" }.count, 2, "the two slots are used")
    }
}
