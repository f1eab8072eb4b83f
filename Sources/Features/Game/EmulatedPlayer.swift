import Foundation
import Protocol
import Scheduling

/// One emulated player (see `PlayerFleet`): its renderers, its switch, what it measures. Called
/// on the session's thread only.
public final class EmulatedPlayer {
    public let id: String
    public let setup: PlayerSetup
    private let startMono: Int64
    private let startWall: Int64
    private var rng: SplitMix64
    public private(set) var switcher = RenderSwitch(start: .local)
    public private(set) var meter: PlayerMeter
    public private(set) var world: PeerEndpoint?
    private var sites: [String: PeerEndpoint] = [:]
    public private(set) var placementVersion: UInt64 = 0
    /// Next timed work (monotonic ns): a local frame, an input, a check.
    public private(set) var due: Int64 = 0

    // Local renderer
    public private(set) var localActive = false
    private var localFirstFrameSeen = false
    private var nextLocalFrame: Int64 = 0
    private var localView: PlayerView?
    private var meshedTick: UInt64 = .max
    // Streams
    private var streamView: PlayerView?
    private var lastFrameFrom: [String: Int64] = [:]
    private var showingSince: Int64 = 0
    // Inputs
    private var inputSequence: UInt64 = 0
    private var nextInput: Int64 = 0
    private var heading = 0.0
    private var lastShownInput: UInt64 = 0
    // Device
    public private(set) var load: Double
    private var nextLoadChange: Int64 = 0
    public private(set) var battery: Double
    public private(set) var pluggedIn: Bool
    private var lastEnergyAt: Int64
    /// The local renderer's latest frame time (ms): the frame it is drawing while active.
    private(set) var lastLocalFrameMs = 16.7
    private var bytesIn: UInt64 = 0, bytesOut: UInt64 = 0
    private var bytesInAtReport: UInt64 = 0, bytesOutAtReport: UInt64 = 0
    private var reportedAt: Int64 = 0
    // Switches and windows, reported until the coordinator settles them.
    private var pendingGap: (record: SwitchRecord, lastShown: Double)?
    private var unsettled: [String: [UInt8]] = [:]
    private var switchCount = 0, batchCount = 0
    public private(set) var fallbacks = 0
    private var batchedWindows = 0
    /// Per closed window: memory, bandwidth in and out, input latency (kept beside the meter's).
    private var windowExtras: [(memory: Double, mbpsIn: Double, mbpsOut: Double, inputMs: Double)] = []
    private var bytesInAtWindow: UInt64 = 0, bytesOutAtWindow: UInt64 = 0, latenciesAtWindow = 0
    private var lastBatchAt: Int64 = 0

    init(id: String, setup: PlayerSetup, startMono: Int64, startWall: Int64, nowMono: Int64) {
        self.id = id
        self.setup = setup
        self.startMono = startMono
        self.startWall = startWall
        rng = SplitMix64(seed: stableHash(id))
        meter = PlayerMeter(start: Double(nowMono - startMono) / 1e9)
        load = setup.otherLoad
        battery = setup.battery
        pluggedIn = setup.device.pluggedIn
        lastEnergyAt = nowMono
        heading = rng.uniform() * 2 * .pi
    }

    private func seconds(_ mono: Int64) -> Double { Double(mono - startMono) / 1e9 }
    public var showing: RenderPlace? { switcher.showing }

    // MARK: Events

    func place(_ p: RenderPlacement, nowMono: Int64, wall: Int64, _ fx: PlayerFleet.Effects) {
        placementVersion = p.version
        let first = world == nil
        let worldChanged = world.map { $0.endpoint != p.world.endpoint } ?? false
        world = p.world
        if !p.site.node.isEmpty { sites[p.site.node] = p.site }
        // Rendering starts on the device: a site, if chosen, is switched to make-before-break.
        if first { apply([.start(.local)], nowMono: nowMono, wall: wall, fx) }
        else if worldChanged && localActive { fx.subscribe(self, on: true) }
        apply(switcher.handle(.want(RenderPlace(p.place), at: seconds(nowMono))), nowMono: nowMono, wall: wall, fx)
    }

    func update(_ v: PlayerView, bytes: Int, nowMono: Int64, wall: Int64, _ fx: PlayerFleet.Effects) {
        bytesIn += UInt64(bytes)
        guard localActive else { return }
        localView = v
        if nextLocalFrame < nowMono && !localFirstFrameSeen { due = min(due, nowMono) }
    }

    func frame(_ f: GameFrame, from site: String, bytes: Int, nowMono: Int64, wall: Int64, _ fx: PlayerFleet.Effects) {
        bytesIn += UInt64(bytes)
        let first = lastFrameFrom[site] == nil
        lastFrameFrom[site] = nowMono
        streamView = PlayerView(tick: f.tick, x: 0, z: 0, visibleChunks: Int(f.visibleChunks), visibleEntities: Int(f.visibleEntities),
                                complexity: f.complexity, newChunks: Int(f.newChunks), editsInView: 0, lastInputSequence: f.lastInputSequence,
                                lastInputSentNanos: f.lastInputSentUnixNanos)
        let t = seconds(nowMono)
        if first, case .warming(_, let target, _, _) = switcher.state, target == .site(site) {
            apply(switcher.handle(.firstFrame(.site(site), at: t)), nowMono: nowMono, wall: wall, fx)
        }
        if showing == .site(site) {
            // Decoding takes its time on the device before the frame shows.
            show(at: t + FrameModel.decodeMs / 1000, input: f.lastInputSequence, sentNanos: f.lastInputSentUnixNanos, wall: wall + Int64(FrameModel.decodeMs * 1e6))
        }
    }

    func serveReply(_ r: ServeReply, from site: String, nowMono: Int64, wall: Int64, _ fx: PlayerFleet.Effects) {
        guard !r.ok else { return }
        apply(switcher.handle(.failed(.site(site), reason: "refused: \(r.reason)", at: seconds(nowMono))), nowMono: nowMono, wall: wall, fx)
    }

    /// Timed work: device changes, energy, inputs, the local renderer, stream silence, warm-up deadlines.
    func advance(nowMono now: Int64, wall: Int64, _ fx: PlayerFleet.Effects) {
        let t = seconds(now)
        if let d = setup.dockAfterSeconds, !pluggedIn, t >= d { pluggedIn = true }
        if now >= nextLoadChange {
            // Other load on the device wanders around its mean (mean-reverting random walk, per second).
            load = min(0.9, max(0, load + 0.3 * (setup.otherLoad - load) + 0.12 * rng.normal()))
            nextLoadChange = now + 1_000_000_000
        }
        let dt = Double(now - lastEnergyAt) / 1e9
        lastEnergyAt = now
        let busy = localActive ? min(1, lastLocalFrameMs / max(lastLocalFrameMs, 1000 / FrameModel.displayHz)) : 0
        let watts = FrameModel.deviceWatts(setup.device, local: localActive, gpuBusy: busy, network: setup.network.name)
        meter.energyJoules += watts * dt
        if !pluggedIn { battery = max(0, battery - watts * dt / (setup.device.batteryWh * 3600)) }

        if world != nil && now >= nextInput {
            sendInput(nowMono: now, wall: wall, fx)
            nextInput = max(nextInput + 50_000_000, now)
        }
        if localActive, var v = localView, now >= nextLocalFrame {
            // New chunks are meshed once, by the first frame drawn from the update that brought them.
            if v.tick == meshedTick { v.newChunks = 0 } else { meshedTick = v.tick }
            let ms = FrameModel.localFrameMs(v, tflops: setup.device.gpuTFLOPS, otherLoad: load, rng: &rng)
            lastLocalFrameMs = ms
            nextLocalFrame = now + Int64(ms * 1e6)
            if !localFirstFrameSeen {
                localFirstFrameSeen = true
                apply(switcher.handle(.firstFrame(.local, at: t)), nowMono: now, wall: wall, fx)
            }
            if showing == .local { show(at: t, input: v.lastInputSequence, sentNanos: v.lastInputSentNanos, wall: wall) }
        }
        if case .site(let s)? = showing {
            let last = max(lastFrameFrom[s] ?? showingSince, showingSince)
            if Double(now - last) / 1e9 > setup.streamSilenceSeconds {
                apply(switcher.handle(.failed(.site(s), reason: String(format: "no frames for %.0f ms", Double(now - last) / 1e6), at: t)), nowMono: now, wall: wall, fx)
            }
        }
        apply(switcher.handle(.tick(at: t)), nowMono: now, wall: wall, fx)
        meter.label = showing?.description ?? "none"
        meter.roll(to: t)
        syncWindows()
        latenciesAtWindow = max(0, latenciesAtWindow - meter.trim(keep: 4000))
        var next = now + 100_000_000
        if world != nil { next = min(next, nextInput) }
        if localActive && localView != nil { next = min(next, nextLocalFrame) }
        due = next
    }

    private func sendInput(nowMono: Int64, wall: Int64, _ fx: PlayerFleet.Effects) {
        let v = localView ?? streamView
        let a = setup.behaviour.action(x: v?.x ?? 0, z: v?.z ?? 0, heading: heading, tick: v?.tick ?? 0, rng: &rng)
        heading = a.heading
        inputSequence += 1
        var m = GameInput()
        m.player = id; m.sequence = inputSequence; m.sentUnixNanos = wall; m.heading = a.heading; m.speed = a.speed
        if let e = a.edit { m.blockEdit = true; m.x = e.x; m.y = e.y; m.z = e.z; m.block = UInt32(e.kind) }
        // Inputs go where the player's frames come from: the world, or the site that forwards them.
        let to: PeerEndpoint?
        switch showing {
        case .site(let s)?: to = sites[s]
        default: to = world
        }
        if let to { bytesOut += UInt64(fx.input(self, to: to, m)) }
    }

    /// A frame shown at `t`; its input echo gives the input-to-frame latency of a new input.
    private func show(at t: Double, input: UInt64, sentNanos: Int64, wall: Int64) {
        var latency: Double?
        if input > lastShownInput && sentNanos > 0 {
            latency = Double(wall - sentNanos) / 1e6
            lastShownInput = input
        }
        if let g = pendingGap {
            var r = g.record
            r.gapMs = max(0, t - g.lastShown) * 1000
            record(r)
            pendingGap = nil
        }
        meter.frame(at: t, inputLatencyMs: latency)
        syncWindows()
    }

    /// Device memory now (GiB, emulated): local rendering holds meshes, a stream a decoder.
    var memoryGiB: Double {
        let streaming = showing?.siteID != nil || switcher.isSwitching
        return FrameModel.deviceMemoryGiB(local: localActive, visibleChunks: (localView ?? streamView)?.visibleChunks ?? 0)
            + (streaming && localActive ? 96.0 / 1024 : 0)
    }

    /// Records memory, bandwidth and input latency for windows the meter has just closed.
    private func syncWindows() {
        let closed = meter.windows.count - windowExtras.count
        guard closed > 0 else { return }
        let w = meter.windowSeconds * Double(closed)
        let lat = Array(meter.inputLatencyMs.suffix(max(0, meter.inputLatencyMs.count - latenciesAtWindow)))
        let extra = (memory: memoryGiB, mbpsIn: Double(bytesIn - bytesInAtWindow) * 8 / 1e6 / w, mbpsOut: Double(bytesOut - bytesOutAtWindow) * 8 / 1e6 / w,
                     inputMs: PlayerMeter.percentile(lat, 50))
        for _ in 0..<closed { windowExtras.append(extra) }
        bytesInAtWindow = bytesIn; bytesOutAtWindow = bytesOut; latenciesAtWindow = meter.inputLatencyMs.count
    }

    private func record(_ r: SwitchRecord) {
        switchCount += 1
        unsettled["switch-\(switchCount)"] = (try? r.serializedBytes()) ?? []
    }

    private func apply(_ directives: [RenderSwitch.Directive], nowMono: Int64, wall: Int64, _ fx: PlayerFleet.Effects) {
        let t = seconds(nowMono)
        for d in directives {
            switch d {
            case .start(.local):
                guard !localActive else { continue }
                localActive = true; localFirstFrameSeen = false; localView = nil; nextLocalFrame = nowMono
                fx.subscribe(self, on: true)
            case .start(.site(let s)):
                lastFrameFrom[s] = nil
                if let e = sites[s] { fx.serve(self, site: e, stop: false) }
            case .show(let p):
                showingSince = nowMono
                meter.label = p.description
            case .stop(.local):
                guard localActive else { continue }
                localActive = false; localView = nil
                fx.subscribe(self, on: false)
            case .stop(.site(let s)):
                if let e = sites[s] { fx.serve(self, site: e, stop: true) }
                lastFrameFrom[s] = nil
            case let .completed(from, to, startedAt, forced):
                var r = SwitchRecord()
                r.player = id; r.from = from.description; r.to = to.description; r.forced = forced
                r.warmupMs = max(0, t - startedAt) * 1000; r.atUnixNanos = wall
                r.reason = forced ? "\(from) stopped serving" : "placed"
                // The frame time the gap is judged against: the old renderer's last one, or, when
                // the local renderer was drawing a longer frame (meshing new chunks), that one: the
                // player would have waited for it had nothing switched.
                r.oldFrameMs = max(meter.frameTimesMs.last ?? 0, from == .local ? lastLocalFrameMs : 0)
                if forced { fallbacks += 1 }
                pendingGap = (r, meter.lastFrameAt ?? t)
            case let .rolledBack(from, target, reason):
                var r = SwitchRecord()
                r.player = id; r.from = from.description; r.to = target.description; r.rolledBack = true; r.reason = reason; r.atUnixNanos = wall
                record(r)
            }
        }
    }

    // MARK: Reports

    /// The player's local FPS as its device would render its current view (from its model, with
    /// no noise), and the range it showed when it last rendered locally.
    var localEstimate: (fps: Double, range: Double) {
        let measured = meter.windows.suffix(60).filter { $0.label == "local" }.suffix(10).map(\.fps)
        let range = measured.count >= 3 ? measured.max()! - measured.min()! : 0
        if showing == .local, measured.count >= 3 { return (measured.reduce(0, +) / Double(measured.count), range) }
        guard let v = streamView ?? localView else { return (0, range) }
        let fps = FrameModel.expectedLocalFPS(v, tflops: setup.device.gpuTFLOPS, otherLoad: setup.otherLoad)
        return (fps, measured.count >= 3 ? range : fps * 0.5)
    }

    func reports(nowMono now: Int64) -> [(String, Data)] {
        var out: [(String, Data)] = unsettled.sorted { $0.key < $1.key }.map { ($0.key, Data($0.value)) }
        if now - lastBatchAt >= 5_000_000_000 && meter.windows.count > batchedWindows {
            lastBatchAt = now
            var b = FpsWindows()
            let ws = meter.windows[batchedWindows...]
            b.firstStartUnixNanos = startWall + Int64(ws.first!.startSeconds * 1e9)
            b.windowSeconds = meter.windowSeconds
            b.fps = ws.map(\.fps)
            b.place = ws.map(\.label)
            let extras = windowExtras[batchedWindows..<min(windowExtras.count, meter.windows.count)]
            b.memoryGib = extras.map(\.memory); b.mbpsIn = extras.map(\.mbpsIn); b.mbpsOut = extras.map(\.mbpsOut); b.inputP50Ms = extras.map(\.inputMs)
            batchedWindows = meter.windows.count
            batchCount += 1
            let bytes: [UInt8] = (try? b.serializedBytes()) ?? []
            unsettled["fps-\(batchCount)"] = bytes
            out.append(("fps-\(batchCount)", Data(bytes)))
        }
        guard now - reportedAt >= 1_000_000_000 else { return out }
        let dt = reportedAt == 0 ? 1 : Double(now - reportedAt) / 1e9
        reportedAt = now
        var r = PlayerReport()
        r.device = setup.device.name; r.network = setup.network.name
        r.place = showing?.description ?? "none"; r.switching = switcher.isSwitching
        let recent = meter.windows.suffix(5).map(\.fps)
        r.fps = recent.isEmpty ? 0 : recent.reduce(0, +) / Double(recent.count)
        r.fpsRange = (recent.max() ?? 0) - (recent.min() ?? 0)
        let ft = Array(meter.frameTimesMs.suffix(600)), il = Array(meter.inputLatencyMs.suffix(200))
        r.frameP50Ms = PlayerMeter.percentile(ft, 50); r.frameP99Ms = PlayerMeter.percentile(ft, 99)
        r.inputLatencyP50Ms = PlayerMeter.percentile(il, 50); r.inputLatencyP99Ms = PlayerMeter.percentile(il, 99)
        let est = localEstimate
        r.localFpsEstimate = est.fps; r.localRangeEstimate = est.range
        r.bandwidthInMbps = Double(bytesIn - bytesInAtReport) * 8 / 1e6 / dt
        r.bandwidthOutMbps = Double(bytesOut - bytesOutAtReport) * 8 / 1e6 / dt
        bytesInAtReport = bytesIn; bytesOutAtReport = bytesOut
        r.memoryGib = memoryGiB
        r.battery = battery; r.pluggedIn = pluggedIn; r.energyJoules = meter.energyJoules
        r.switchesCompleted = UInt64(switcher.completed); r.switchesRolledBack = UInt64(switcher.rolledBack); r.fallbacks = UInt64(fallbacks)
        r.longestGapMs = meter.longestGap * 1000; r.frames = UInt64(meter.framesShown)
        r.accessRttMs = 2 * setup.network.oneWayMs; r.linkMbps = setup.network.bandwidthMbps
        r.placementVersion = placementVersion
        r.frozenMs = meter.frozenFor(at: seconds(now)) * 1000
        out.append(("player", (try? r.serializedData()) ?? Data()))
        return out
    }

    func settle(_ keys: [String]) { for k in keys { unsettled[k] = nil } }
}
