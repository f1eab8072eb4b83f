import Cluster
import DataPlane
@testable import Features
import Foundation
import Protocol
import Scheduling
import Wire
import XCTest

private final class StreamSink: DataPlaneStreamReceiver {
    var got: [(sender: String, kind: String, header: [UInt8], payload: [UInt8])] = []
    func streamMessage(from sender: String, kind: String, header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) {
        got.append((sender, kind, Array(header), Array(payload)))
    }
}

private func plane(_ id: String) throws -> DataPlane { try DataPlane(config: DataPlaneConfig(nodeID: id)) }

private func pump(_ planes: [DataPlane], seconds: Double, until done: () -> Bool = { false }, also: () -> Void = {}) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while !done() && Date() < deadline {
        _ = try ZMQPoller.readable(planes.flatMap(\.sockets), timeoutMs: 2)
        for p in planes { try p.pump() }
        also()
    }
}

final class DataPlaneStreamTests: XCTestCase {
    func testStreamMessagesArriveCheckedAndUnknownKindsAreDropped() throws {
        let a = try plane("a"), b = try plane("b")
        let sink = StreamSink()
        b.registerStream(sink, forKind: "game-frame")
        let payload = GameWire.payload(10_000, seed: 9)
        try a.post(to: PeerAddress(endpoint: b.endpoint), kind: "game-frame", header: [1, 2, 3], payload: payload)
        try a.post(to: PeerAddress(endpoint: b.endpoint), kind: "game-frame", header: [4])
        try a.post(to: PeerAddress(endpoint: b.endpoint), kind: "nobody-takes-this", header: [5])
        try pump([a, b], seconds: 10, until: { sink.got.count == 2 && b.stats.streamDropped == 1 })
        XCTAssertEqual(sink.got.map(\.header), [[1, 2, 3], [4]], "in order, headers intact")
        XCTAssertEqual(sink.got[0].payload, payload, "every payload byte as sent")
        XCTAssertEqual(sink.got[0].sender, "a")
        XCTAssertEqual(b.stats.streamDropped, 1, "a kind no feature takes is dropped and counted")
        XCTAssertEqual(a.stats.streamSent, 3)
    }
}

/// A world server, a render site and a player on real data planes in this process, driven on this
/// thread: the player starts locally, switches to the site make-before-break, and falls back to
/// local rendering on its own when the site goes away.
final class GameOnDataPlaneTests: XCTestCase {
    func testSwitchToASiteAndFallBackWhenItDies() throws {
        let worldPlane = try plane("world-0"), sitePlane = try plane("edge-0"), playerPlane = try plane("players")
        let world = WorldServerHandler(nodeID: "world-0", plane: worldPlane, tickHz: 20, seed: 3, entities: 16)
        let site = RenderSiteHandler(nodeID: "edge-0", plane: sitePlane, slots: 2, gpuModel: "L4")
        let fleet = PlayerFleet(plane: playerPlane)
        var setup = PlayerSetup(device: DeviceCatalog.device(named: "phone")!, network: DeviceCatalog.network(named: "wifi")!, behaviour: .randomWalk)
        setup.streamSilenceSeconds = 0.5
        let node = fleet.add(id: "p-0", setup: setup)
        let player = node.handler.player
        var siteAlive = true
        func drive(_ seconds: Double, until done: () -> Bool = { false }) throws {
            try pump(siteAlive ? [worldPlane, sitePlane] : [worldPlane], seconds: seconds, until: done) {
                let wall = SystemClock.shared.wallNanos()
                world.pump(wallNanos: wall)
                if siteAlive { site.pump(wallNanos: wall) }
                fleet.pump(wallNanos: wall)
            }
        }
        var placement = RenderPlacement()
        placement.place = "local"; placement.version = 1; placement.world = GameWire.endpoint(node: "world-0", worldPlane)
        XCTAssertTrue(node.handler.execute(try GameCommand.with { $0.place = placement }.serializedBytes(), commandID: 1, wallNanos: 0).ok)
        try drive(10, until: { player.meter.framesShown >= 20 })
        XCTAssertGreaterThanOrEqual(player.meter.framesShown, 20, "local frames from the world's updates")
        XCTAssertEqual(player.showing, .local)

        placement.place = "edge-0"; placement.version = 2; placement.site = GameWire.endpoint(node: "edge-0", sitePlane)
        XCTAssertTrue(node.handler.execute(try GameCommand.with { $0.place = placement }.serializedBytes(), commandID: 2, wallNanos: 0).ok)
        try drive(10, until: { player.showing == .site("edge-0") })
        XCTAssertEqual(player.showing, .site("edge-0"))
        XCTAssertFalse(player.localActive, "the local renderer stopped once the stream showed")
        let drawing = player.lastLocalFrameMs
        XCTAssertEqual(site.players, ["p-0"])
        let shown = player.meter.framesShown
        try drive(10, until: { player.meter.framesShown >= shown + 30 })
        XCTAssertGreaterThanOrEqual(player.meter.framesShown, shown + 30, "frames keep coming from the site")

        // An older placement (a re-sent command) changes nothing.
        placement.place = "local"; placement.version = 1
        _ = node.handler.execute(try GameCommand.with { $0.place = placement }.serializedBytes(), commandID: 3, wallNanos: 0)
        XCTAssertEqual(player.showing, .site("edge-0"))

        // The site dies: the player notices the silence and renders locally again.
        siteAlive = false
        sitePlane.close()
        try drive(10, until: { player.showing == .local && player.meter.frozenFor(at: player.meter.lastFrameAt ?? 0) == 0 && player.fallbacks == 1 })
        let after = player.meter.framesShown
        try drive(10, until: { player.meter.framesShown >= after + 10 })
        XCTAssertEqual(player.showing, .local)
        XCTAssertEqual(player.fallbacks, 1)
        XCTAssertGreaterThanOrEqual(player.meter.framesShown, after + 10, "no player is left without frames")

        let records = fleet.reports(player).filter { $0.key.hasPrefix("switch-") }.compactMap { try? SwitchRecord(serializedBytes: $0.body) }
        XCTAssertEqual(records.map(\.to), ["edge-0", "local"])
        XCTAssertEqual(records.map(\.forced), [false, true])
        XCTAssertLessThan(records[0].gapMs, 1000, "make-before-break: the switch itself shows no long gap")
        XCTAssertGreaterThanOrEqual(records[0].oldFrameMs, drawing, "the gap is judged against the frame the local renderer was drawing, when longer than its last")
        XCTAssertGreaterThanOrEqual(records[1].gapMs, 500, "the fall-back waited for the silence")
        XCTAssertLessThan(records[1].gapMs, 3000, "and was bounded by it, far under the failure detector's time")
        XCTAssertGreaterThan(world.world.tick, 20)
        XCTAssertGreaterThan(world.updatesSent, 0)
        // Reports stay until settled.
        node.handler.settle(["switch-1"])
        XCTAssertEqual(fleet.reports(player).filter { $0.key.hasPrefix("switch-") }.map(\.key), ["switch-2"])
    }

    func testASiteWithoutSlotsRefusesAndThePlayerRollsBack() throws {
        let worldPlane = try plane("world-0"), sitePlane = try plane("edge-0"), playerPlane = try plane("players")
        let world = WorldServerHandler(nodeID: "world-0", plane: worldPlane, tickHz: 20, entities: 0)
        let site = RenderSiteHandler(nodeID: "edge-0", plane: sitePlane, slots: 1, gpuModel: "L4")
        let fleet = PlayerFleet(plane: playerPlane)
        let setup = PlayerSetup(device: DeviceCatalog.device(named: "laptop")!, network: DeviceCatalog.network(named: "wifi")!, behaviour: .idle)
        let nodes = [fleet.add(id: "a", setup: setup), fleet.add(id: "b", setup: setup)]
        func drive(_ seconds: Double, until done: () -> Bool) throws {
            try pump([worldPlane, sitePlane], seconds: seconds, until: done) {
                let wall = SystemClock.shared.wallNanos()
                world.pump(wallNanos: wall); site.pump(wallNanos: wall); fleet.pump(wallNanos: wall)
            }
        }
        for (i, n) in nodes.enumerated() {
            var p = RenderPlacement()
            p.place = "edge-0"; p.version = 1; p.world = GameWire.endpoint(node: "world-0", worldPlane); p.site = GameWire.endpoint(node: "edge-0", sitePlane)
            _ = n.handler.execute(try GameCommand.with { $0.place = p }.serializedBytes(), commandID: UInt64(i + 1), wallNanos: 0)
            try drive(10, until: { n.handler.player.showing == .site("edge-0") || n.handler.player.switcher.rolledBack > 0 })
        }
        XCTAssertEqual(nodes[0].handler.player.showing, .site("edge-0"))
        XCTAssertEqual(nodes[1].handler.player.showing, .local, "no slot: it stays local")
        XCTAssertEqual(nodes[1].handler.player.switcher.rolledBack, 1)
        XCTAssertEqual(site.refused, 1)
        let r = fleet.reports(nodes[1].handler.player).filter { $0.key.hasPrefix("switch-") }.compactMap { try? SwitchRecord(serializedBytes: $0.body) }
        XCTAssertEqual(r.first?.rolledBack, true)
        XCTAssertTrue(r.first?.reason.contains("no free render slot") ?? false, r.first?.reason ?? "none")
    }
}
