import Cluster
import DataPlane
import Foundation
import Logging
import Protocol
import Scheduling

/// The world server's node: kind WORLD, its tick rate as capabilities.
public final class WorldNode: AgentBehavior {
    public let handler: WorldServerHandler
    public init(handler: WorldServerHandler) { self.handler = handler }
    public var kind: NodeKind { .world }
    public func capabilities() -> Capabilities {
        var w = WorldCapabilities(); w.tickHz = handler.world.tickHz; w.maxPlayers = UInt32(handler.maxPlayers)
        var c = Capabilities(); c.world = w
        return c
    }
    public func fillTelemetry(_ telemetry: inout Telemetry) {}
    public func running() -> [String] { [] }
    public func execute(_ command: Command) -> (ok: Bool, detail: String)? { nil }
    public var handlers: [FeatureHandler] { [handler] }
}

/// Feature "game", world-server side: runs `VoxelWorld` at its tick rate on the session's thread,
/// takes inputs and subscriptions over the data plane, and after each tick sends every
/// subscribed renderer (a player's device, or the render site serving it) that player's update.
/// Each tick's duration is measured (Meterstick: P50/P99 and variability) and reported.
public final class WorldServerHandler: FeatureHandler, DataPlaneStreamReceiver {
    public var feature: String { GameWire.feature }
    public private(set) var world: VoxelWorld
    public let maxPlayers: Int
    private let plane: DataPlane
    private let nodeID: String
    private var clock: Clock = SystemClock.shared
    private var logger = Logger(label: "strato.game.world")
    private var nextTick: Int64 = 0
    private let interval: Int64
    /// Renderers per player (the device itself, a render site, or both during a switch).
    private var subscribers: [String: [String: PeerEndpoint]] = [:]
    private var pending: [String: PlayerAction] = [:]
    private var edits: [String: [BlockEdit]] = [:]
    private var lastHeard: [String: Int64] = [:]
    public private(set) var stats: TickStats
    private var reportTicks: [Double] = []
    public private(set) var updatesSent: UInt64 = 0
    private var problemLog = GameProblems("game world")
    public var problems: [String: Int] { problemLog.counts }
    private var reportedAt: Int64 = 0
    /// A player not heard from (inputs or subscriptions) for this long leaves the world.
    public var idleTimeoutNanos: Int64 = 5_000_000_000

    public init(nodeID: String, plane: DataPlane, tickHz: Double = 20, seed: UInt64 = 1, entities: Int = 64, maxPlayers: Int = 2000) {
        self.nodeID = nodeID
        self.plane = plane
        self.world = VoxelWorld(seed: seed, tickHz: tickHz, entities: entities)
        self.maxPlayers = maxPlayers
        interval = Int64(1e9 / tickHz)
        stats = TickStats(tickHz: tickHz)
        plane.registerStream(self, forKind: GameWire.subscribe)
        plane.registerStream(self, forKind: GameWire.input)
    }

    public func attach(_ context: NodeContext) { clock = context.clock; logger = context.logger }

    private func problem(_ kind: String, _ message: String) { problemLog.record(kind, message, logger) }

    public func execute(_ body: [UInt8], commandID: UInt64, wallNanos: Int64) -> FeatureOutcome { .refused("a world server takes no commands") }

    // MARK: Streams in

    public func streamMessage(from sender: String, kind: String, header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) {
        let now = clock.monotonicNanos()
        switch kind {
        case GameWire.subscribe:
            guard let m = try? GameSubscribe(serializedBytes: Array(header)), !m.player.isEmpty, !m.renderer.node.isEmpty else {
                problem("malformed_subscribe", "a malformed subscription from \(sender) was dropped"); return
            }
            if m.subscribe {
                if world.players[m.player] == nil {
                    guard world.players.count < maxPlayers else { problem("world_full", "player \(m.player) refused: the world holds \(maxPlayers) players"); return }
                    world.join(m.player, viewDistance: m.viewDistance > 0 ? Int(m.viewDistance) : 8)
                    logger.info("game world: player joined", metadata: ["player": "\(m.player)", "renderer": "\(m.renderer.node)"])
                }
                if subscribers[m.player]?[m.renderer.node] == nil { world.resetView(m.player) }   // a new renderer needs every chunk
                subscribers[m.player, default: [:]][m.renderer.node] = m.renderer
            } else {
                subscribers[m.player]?[m.renderer.node] = nil
            }
            lastHeard[m.player] = now
        case GameWire.input:
            guard let m = try? GameInput(serializedBytes: Array(header)), !m.player.isEmpty, m.speed.isFinite, m.heading.isFinite else {
                problem("malformed_input", "a malformed input from \(sender) was dropped"); return
            }
            guard world.players[m.player] != nil else { problem("input_unknown_player", "input for \(m.player), who is not in the world"); return }
            var a = PlayerAction(heading: m.heading, speed: m.speed, inputSequence: m.sequence, inputSentNanos: m.sentUnixNanos)
            if m.blockEdit { edits[m.player, default: []].append(BlockEdit(x: m.x, y: m.y, z: m.z, kind: UInt8(truncatingIfNeeded: m.block))) }
            if let old = pending[m.player], old.inputSequence > a.inputSequence { a = old }
            pending[m.player] = a
            lastHeard[m.player] = now
        default:
            problem("unexpected_kind", "unexpected stream '\(kind)' from \(sender)")
        }
    }

    // MARK: The tick

    public var isPumped: Bool { true }
    public var nextPumpDue: Int64? { nextTick }

    public func pump(wallNanos: Int64) {
        let now = clock.monotonicNanos()
        if nextTick == 0 { nextTick = now }
        guard now >= nextTick else { return }
        // Fixed rate: the next tick is one interval after this one was due (a late tick does not
        // shift the schedule; a server far behind skips to now, as Minecraft's does).
        nextTick += interval
        if now - nextTick > 10 * interval { nextTick = now + interval }
        runTick(now: now)
    }

    func runTick(now: Int64) {
        let started = clock.monotonicNanos()
        for (id, t) in lastHeard where now - t > idleTimeoutNanos {
            world.leave(id); subscribers[id] = nil; lastHeard[id] = nil; pending[id] = nil
            logger.info("game world: player left (silent)", metadata: ["player": "\(id)"])
        }
        for (id, a) in pending {
            var action = a
            do {
                for e in edits[id] ?? [] { action.edit = e; try world.apply(action, for: id); action.edit = nil }
                try world.apply(action, for: id)
            } catch { problem("bad_edit", "\(id): \(error)") }
            // Movement carries on until the next input says otherwise; edits happen once.
            pending[id] = PlayerAction(heading: a.heading, speed: a.speed, inputSequence: a.inputSequence, inputSentNanos: a.inputSentNanos)
        }
        edits.removeAll(keepingCapacity: true)
        let views = world.step()
        for (id, subs) in subscribers {
            guard let v = views[id] else { continue }
            let header = GameUpdate(player: id, v)
            let body = GameWire.payload(v.updateBytes, seed: world.tick ^ stableHash(id))
            for (_, r) in subs where GameWire.post(plane, to: r, kind: GameWire.update, header, payload: body) { updatesSent += 1 }
        }
        let seconds = Double(clock.monotonicNanos() - started) / 1e9
        stats.record(seconds: seconds)
        reportTicks.append(seconds * 1000)
    }

    public var report: WorldReport {
        var r = WorldReport()
        r.tick = world.tick; r.players = UInt32(world.players.count)
        r.tickP50Ms = stats.percentile(50) * 1000; r.tickP99Ms = stats.percentile(99) * 1000
        r.variabilityMs = stats.variability * 1000; r.overruns = UInt64(stats.overruns); r.edits = UInt64(world.editCount)
        r.updatesSent = updatesSent; r.tickMeanMs = stats.mean * 1000; r.tickHz = world.tickHz
        r.malformed = UInt64(problemLog.malformed)
        return r
    }

    public func reports(wallNanos: Int64) -> [FeatureReport] {
        let now = clock.monotonicNanos()
        guard now - reportedAt >= 1_000_000_000 else { return [] }
        reportedAt = now
        var r = report
        r.recentTickMs = reportTicks
        reportTicks.removeAll()
        return [report(key: "world", r)]
    }
}
