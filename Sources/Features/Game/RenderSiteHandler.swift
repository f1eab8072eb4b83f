import Cluster
import DataPlane
import Foundation
import Logging
import Protocol
import Scheduling

/// Feature "game", render-site side: serves players' remote renderers. A player asks to be served
/// ("game-serve"); the site takes one of its render slots (or refuses: no slot, or an unusable
/// request), subscribes to the world for that player, and renders the latest world state at the
/// site's frame cap, each frame's cost emulated on the site's GPU model shared by its slots
/// (labelled emulated), encoded at the stream's bitrate: each frame a real payload of that size,
/// sent to the player over the data plane. Inputs the player sends go on to the world.
public final class RenderSiteHandler: FeatureHandler, DataPlaneStreamReceiver {
    public var feature: String { GameWire.feature }
    public let nodeID: String
    public let slots: Int
    public let gpuModel: String
    public let siteTFLOPS: Double
    public let maxFPS: Double
    private let plane: DataPlane
    private var clock: Clock = SystemClock.shared
    private var logger = Logger(label: "strato.game.render")

    struct Session {
        var request: ServeRequest
        var view: PlayerView?
        var nextFrame: Int64
        var sequence: UInt64 = 0
        var lastHeard: Int64
        /// The last frame's render and encode time: the next frame is ready that long after it starts.
        var renderNanos: Int64 = 5_000_000
    }
    private var sessions: [String: Session] = [:]
    public private(set) var framesSent: UInt64 = 0, refused: UInt64 = 0
    public private(set) var bytesSent: UInt64 = 0
    private var problemLog = GameProblems("game render")
    public var problems: [String: Int] { problemLog.counts }
    private var reportedAt: Int64 = 0
    private var bytesAtReport: UInt64 = 0
    /// A player silent for this long (no input) is dropped and its slot freed.
    public var idleTimeoutNanos: Int64 = 3_000_000_000

    public var used: Int { sessions.count }
    /// Renderers sharing the GPU for the cost emulation (default: the slots); 1 in a benchmark
    /// that measures the process rather than the modelled GPU.
    public var gpuShareSlots: Int?
    public var players: [String] { sessions.keys.sorted() }

    public init(nodeID: String, plane: DataPlane, slots: Int, gpuModel: String, maxFPS: Int = 60) {
        self.nodeID = nodeID
        self.plane = plane
        self.slots = slots
        self.gpuModel = gpuModel
        self.siteTFLOPS = DeviceCatalog.renderGPU(gpuModel) ?? 30
        self.maxFPS = Double(maxFPS)
        plane.registerStream(self, forKind: GameWire.serve)
        plane.registerStream(self, forKind: GameWire.update)
        plane.registerStream(self, forKind: GameWire.input)
    }

    public func attach(_ context: NodeContext) { clock = context.clock; logger = context.logger }

    private func problem(_ kind: String, _ message: String) { problemLog.record(kind, message, logger) }

    public func execute(_ body: [UInt8], commandID: UInt64, wallNanos: Int64) -> FeatureOutcome { .refused("a render site is asked by players on the data plane, not by commands") }
    public func running() -> [String] { sessions.keys.sorted().map { "render:\($0)" } }

    private func reply(_ r: ServeRequest, ok: Bool, _ reason: String) {
        var m = ServeReply(); m.player = r.player; m.ok = ok; m.reason = reason
        _ = GameWire.post(plane, to: r.playerEndpoint, kind: GameWire.serveReply, m)
    }

    private func subscribe(_ r: ServeRequest, _ on: Bool) {
        var s = GameSubscribe(); s.player = r.player; s.renderer = GameWire.endpoint(node: nodeID, plane); s.subscribe = on
        s.viewDistance = r.viewDistance
        _ = GameWire.post(plane, to: r.world, kind: GameWire.subscribe, s)
    }

    public func streamMessage(from sender: String, kind: String, header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) {
        let now = clock.monotonicNanos()
        switch kind {
        case GameWire.serve:
            guard let r = try? ServeRequest(serializedBytes: Array(header)), !r.player.isEmpty, !r.playerEndpoint.endpoint.isEmpty else {
                problem("malformed_serve", "a malformed serve request from \(sender) was dropped"); return
            }
            if r.stop {
                if let s = sessions.removeValue(forKey: r.player) { subscribe(s.request, false); logger.info("game render: stopped", metadata: ["player": "\(r.player)"]) }
                return
            }
            if sessions[r.player] != nil { sessions[r.player]!.request = r; sessions[r.player]!.lastHeard = now; reply(r, ok: true, "already served"); return }
            guard r.world.endpoint.isEmpty == false else { refused += 1; reply(r, ok: false, "the request names no world server"); return }
            guard sessions.count < slots else {
                refused += 1
                reply(r, ok: false, "no free render slot (\(slots) of \(slots) in use)")
                return
            }
            sessions[r.player] = Session(request: r, nextFrame: now, lastHeard: now)
            subscribe(r, true)
            reply(r, ok: true, "slot \(sessions.count) of \(slots)")
            logger.info("game render: serving", metadata: ["player": "\(r.player)", "slots_used": "\(sessions.count)"])
        case GameWire.update:
            guard let u = try? GameUpdate(serializedBytes: Array(header)) else { problem("malformed_update", "a malformed update from \(sender) was dropped"); return }
            guard sessions[u.player] != nil else { return }   // stopped meanwhile
            sessions[u.player]!.view = u.view
        case GameWire.input:
            guard let m = try? GameInput(serializedBytes: Array(header)), !m.player.isEmpty else { problem("malformed_input", "a malformed input from \(sender) was dropped"); return }
            guard let s = sessions[m.player] else { return }
            sessions[m.player]!.lastHeard = now
            _ = GameWire.post(plane, to: s.request.world, kind: GameWire.input, m)
        default:
            problem("unexpected_kind", "unexpected stream '\(kind)' from \(sender)")
        }
    }

    // MARK: Rendering

    public var isPumped: Bool { true }
    public var nextPumpDue: Int64? { sessions.values.map { $0.nextFrame + $0.renderNanos }.min() }

    public func pump(wallNanos: Int64) {
        let now = clock.monotonicNanos()
        for id in Array(sessions.keys) {
            guard var s = sessions[id] else { continue }
            if now - s.lastHeard > idleTimeoutNanos {
                sessions[id] = nil
                subscribe(s.request, false)
                logger.warning("game render: player silent, slot freed", metadata: ["player": "\(id)"])
                continue
            }
            guard let v = s.view else { continue }
            // The GPU is shared by the site's slots: each renderer gets its share (emulated). A
            // frame started at nextFrame goes out once its render and encode time has passed.
            let renderMs = FrameModel.remoteRenderMs(v, siteTFLOPS: siteTFLOPS, slots: gpuShareSlots ?? slots)
            s.renderNanos = Int64(renderMs * 1e6)
            sessions[id]!.renderNanos = s.renderNanos
            guard now >= s.nextFrame + s.renderNanos else { continue }
            let fps = min(maxFPS, 1000 / renderMs)
            let bytes = max(256, Int(s.request.streamMbps * 1e6 / 8 / fps))
            s.sequence += 1
            var f = GameFrame()
            f.player = id; f.sequence = s.sequence; f.tick = v.tick
            f.lastInputSequence = v.lastInputSequence; f.lastInputSentUnixNanos = v.lastInputSentNanos
            f.renderMs = renderMs
            f.visibleChunks = UInt32(v.visibleChunks); f.visibleEntities = UInt32(v.visibleEntities); f.complexity = v.complexity; f.newChunks = UInt32(v.newChunks)
            if GameWire.post(plane, to: s.request.playerEndpoint, kind: GameWire.frame, f, payload: GameWire.payload(bytes, seed: s.sequence ^ stableHash(id))) {
                framesSent += 1; bytesSent += UInt64(bytes)
            }
            // The frame is ready renderMs after it started; the next starts at the frame interval.
            s.nextFrame = max(s.nextFrame + Int64(1e9 / fps), now)
            sessions[id] = s
        }
    }

    public func reports(wallNanos: Int64) -> [FeatureReport] {
        let now = clock.monotonicNanos()
        guard now - reportedAt >= 1_000_000_000 else { return [] }
        let seconds = reportedAt == 0 ? 1 : Double(now - reportedAt) / 1e9
        reportedAt = now
        var r = RenderSiteReport()
        r.slots = UInt32(slots); r.slotsUsed = UInt32(sessions.count); r.players = players
        r.framesSent = framesSent; r.refused = refused
        r.mbpsOut = Double(bytesSent - bytesAtReport) * 8 / 1e6 / seconds
        bytesAtReport = bytesSent
        r.malformed = UInt64(problemLog.malformed)
        return [report(key: "site", r)]
    }
}
