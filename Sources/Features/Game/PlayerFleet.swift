import Cluster
import DataPlane
import Foundation
import Logging
import Protocol
import Scheduling
import Wire

/// How one emulated player is set up.
public struct PlayerSetup: Sendable {
    public var device: DeviceProfile
    public var network: NetworkClass
    public var behaviour: Behaviour
    public var viewDistance = 8
    /// Share of the device's GPU other work takes on average (0…0.9); it wanders around this
    /// (background apps, thermal limits), which is what makes local frame rates vary.
    public var otherLoad = 0.2
    /// Seconds after start when the device is plugged in (docked); nil: never.
    public var dockAfterSeconds: Double?
    /// Battery charge at start (0…1).
    public var battery = 1.0
    /// Seconds without a frame from the site that serves the player before it falls back to local.
    public var streamSilenceSeconds = 0.5
    public init(device: DeviceProfile, network: NetworkClass, behaviour: Behaviour) {
        self.device = device; self.network = network; self.behaviour = behaviour
    }
}

/// A player's node: kind PLAYER, its device as capabilities, its game handler.
public final class PlayerNode: AgentBehavior {
    public let handler: PlayerHandler
    public init(handler: PlayerHandler) { self.handler = handler }
    public var kind: NodeKind { .player }
    public func capabilities() -> Capabilities {
        let s = handler.player.setup
        var p = PlayerCapabilities()
        p.device = s.device.name; p.network = s.network.name; p.gpuTflops = s.device.gpuTFLOPS; p.memoryGib = s.device.memoryGiB
        p.batteryWh = s.device.batteryWh; p.behaviour = s.behaviour.rawValue; p.emulated = true
        var c = Capabilities(); c.player = p
        return c
    }
    public func fillTelemetry(_ telemetry: inout Telemetry) {}
    public func running() -> [String] { [] }
    public func execute(_ command: Command) -> (ok: Bool, detail: String)? { nil }
    public var handlers: [FeatureHandler] { [handler] }
}

/// Feature "game" for one player node: placements in, reports out (the work is the fleet's).
public final class PlayerHandler: FeatureHandler {
    public var feature: String { GameWire.feature }
    public let player: EmulatedPlayer
    unowned let fleet: PlayerFleet
    init(player: EmulatedPlayer, fleet: PlayerFleet) { self.player = player; self.fleet = fleet }

    public func execute(_ body: [UInt8], commandID: UInt64, wallNanos: Int64) -> FeatureOutcome {
        guard let c = try? GameCommand(serializedBytes: body), case .place(let p)? = c.action else { return .refused("not a GameCommand with a placement") }
        return fleet.place(player, p)
    }
    public func reports(wallNanos: Int64) -> [FeatureReport] { fleet.reports(player) }
    public func settle(_ keys: [String]) { player.settle(keys) }
}

/// Many emulated players in one process (`strato client player --virtual N`) sharing one data
/// plane. Each player renders locally (frame times emulated from its view and its device's GPU)
/// or shows a stream from a render site, switching make-before-break (`RenderSwitch`) when the
/// coordinator places it elsewhere, and falling back to local rendering on its own when the
/// stream goes silent. Everything a player sees is measured (`PlayerMeter`) and reported.
public final class PlayerFleet: FeatureHandler, AdvertisesDataEndpoint, DataPlaneStreamReceiver {
    public static let feature = "game-fleet"
    public var feature: String { PlayerFleet.feature }
    public let plane: DataPlane
    private(set) var players: [String: EmulatedPlayer] = [:]
    private var clock: Clock = SystemClock.shared
    private var logger = Logger(label: "strato.game.player")
    private var problemLog = GameProblems("game player")
    public var problems: [String: Int] { problemLog.counts }
    private var nextDue: Int64 = 0
    private let startMono: Int64
    private let startWall: Int64

    public init(plane: DataPlane, clock: Clock = SystemClock.shared) {
        self.plane = plane
        self.clock = clock
        startMono = clock.monotonicNanos()
        startWall = clock.wallNanos()
        plane.registerStream(self, forKind: GameWire.update)
        plane.registerStream(self, forKind: GameWire.frame)
        plane.registerStream(self, forKind: GameWire.serveReply)
    }

    /// Adds a player; returns its node (to register with the session).
    public func add(id: String, setup: PlayerSetup) -> PlayerNode {
        let p = EmulatedPlayer(id: id, setup: setup, startMono: startMono, startWall: startWall, nowMono: clock.monotonicNanos())
        players[id] = p
        return PlayerNode(handler: PlayerHandler(player: p, fleet: self))
    }

    public func attach(_ context: NodeContext) { clock = context.clock; logger = context.logger }
    public var dataEndpoint: String { plane.endpoint }
    public var dataPublicKey: String? { plane.publicKey }
    public var sockets: [ZMQSocket] { plane.sockets }
    public var isPumped: Bool { true }
    public var nextPumpDue: Int64? { min(nextDue, plane.nextDueNanos ?? .max) }
    public func shutdown() { plane.close() }
    public func execute(_ body: [UInt8], commandID: UInt64, wallNanos: Int64) -> FeatureOutcome { .refused("commands go to a player's own node") }
    /// Reports are each player's own (`PlayerHandler`).
    public func reports(wallNanos: Int64) -> [FeatureReport] { [] }

    private func problem(_ kind: String, _ message: String) { problemLog.record(kind, message, logger) }

    func place(_ p: EmulatedPlayer, _ placement: RenderPlacement) -> FeatureOutcome {
        guard placement.version >= p.placementVersion else { return FeatureOutcome(ok: true, detail: "placement \(placement.version) is older than \(p.placementVersion): ignored") }
        guard !placement.world.endpoint.isEmpty else { return .refused("the placement names no world server") }
        let place = RenderPlace(placement.place)
        if place != .local && placement.site.endpoint.isEmpty { return .refused("placement at \(placement.place) has no site endpoint") }
        let fx = Effects(fleet: self)
        p.place(placement, nowMono: clock.monotonicNanos(), wall: clock.wallNanos(), fx)
        nextDue = min(nextDue, p.due)
        return FeatureOutcome(ok: true, detail: "\(p.id) → \(place) (\(placement.reason))")
    }

    func reports(_ p: EmulatedPlayer) -> [FeatureReport] {
        p.reports(nowMono: clock.monotonicNanos()).map { key, body in
            var r = FeatureReport(); r.feature = GameWire.feature; r.key = key; r.body = body
            return r
        }
    }

    /// What a player's directives do on the wire.
    struct Effects {
        unowned let fleet: PlayerFleet
        func subscribe(_ p: EmulatedPlayer, on: Bool) {
            guard let w = p.world else { return }
            var s = GameSubscribe(); s.player = p.id; s.renderer = GameWire.endpoint(node: p.id, fleet.plane); s.subscribe = on
            s.viewDistance = UInt32(p.setup.viewDistance)
            if !GameWire.post(fleet.plane, to: w, kind: GameWire.subscribe, s) { fleet.problem("unreachable_world", "could not reach the world at \(w.endpoint)") }
        }
        func serve(_ p: EmulatedPlayer, site: PeerEndpoint, stop: Bool) {
            var r = ServeRequest(); r.player = p.id; r.playerEndpoint = GameWire.endpoint(node: p.id, fleet.plane)
            if let w = p.world { r.world = w }
            r.streamMbps = FrameModel.streamMbps(linkMbps: p.setup.network.bandwidthMbps); r.viewDistance = UInt32(p.setup.viewDistance); r.stop = stop
            if !GameWire.post(fleet.plane, to: site, kind: GameWire.serve, r) { fleet.problem("unreachable_site", "could not reach \(site.node)") }
        }
        func input(_ p: EmulatedPlayer, to: PeerEndpoint, _ m: GameInput) -> Int {
            guard let h: [UInt8] = try? m.serializedBytes() else { return 0 }
            do { try fleet.plane.post(to: to.address, kind: GameWire.input, header: h) } catch { return 0 }
            return h.count + 64
        }
    }

    public func streamMessage(from sender: String, kind: String, header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) {
        let now = clock.monotonicNanos(), wall = clock.wallNanos()
        let fx = Effects(fleet: self)
        switch kind {
        case GameWire.update:
            guard let u = try? GameUpdate(serializedBytes: Array(header)), let p = players[u.player] else { problem("malformed_update", "an update that is malformed or for no player here, from \(sender)"); return }
            p.update(u.view, bytes: header.count + payload.count, nowMono: now, wall: wall, fx)
            nextDue = min(nextDue, p.due)
        case GameWire.frame:
            guard let f = try? GameFrame(serializedBytes: Array(header)), let p = players[f.player] else { problem("malformed_frame", "a frame that is malformed or for no player here, from \(sender)"); return }
            p.frame(f, from: sender, bytes: header.count + payload.count, nowMono: now, wall: wall, fx)
            nextDue = min(nextDue, p.due)
        case GameWire.serveReply:
            guard let r = try? ServeReply(serializedBytes: Array(header)), let p = players[r.player] else { problem("malformed_reply", "a malformed serve reply from \(sender)"); return }
            p.serveReply(r, from: sender, nowMono: now, wall: wall, fx)
            nextDue = min(nextDue, p.due)
        default:
            problem("unexpected_kind", "unexpected stream '\(kind)' from \(sender)")
        }
    }

    public func pump(wallNanos: Int64) {
        do { try plane.pump() } catch { problem("data_plane", "\(error)") }
        let now = clock.monotonicNanos()
        guard now >= nextDue else { return }
        let fx = Effects(fleet: self)
        var due = Int64.max
        for p in players.values {
            if p.due <= now { p.advance(nowMono: now, wall: wallNanos, fx) }
            due = min(due, p.due)
        }
        nextDue = due
    }
}
