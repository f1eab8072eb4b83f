import Foundation
import Protocol
import Scheduling

/// Feature "game" in the digital twin: the same world (`VoxelWorld`), frame model, behaviours and
/// render policy as the testbed, over modelled players and sites on virtual time, so a policy can
/// be tried at scales no testbed here holds. Steps of `step` seconds; the policy runs every
/// second on what players reported the second before, as the coordinator does.
///
/// What it models: local frames (the frame model's own sampling, with the device's wandering
/// load and chunk meshing), streamed frames at the site's rate (render cost on its GPU share,
/// capped by the display), make-before-break switches that complete after a warm-up (round
/// trips, a tick, a first frame), refusals when a site's slots are taken, and fall-backs when a
/// site dies (the player's silence timeout, then a local warm-up), a site's link slowed by a fault.
/// What it leaves out: network jitter and CPU contention of the processes.
public struct GameTwinModel {
    public struct Site: Sendable {
        public var id: String
        public var kind: String
        public var slots: Int
        public var tflops: Double
        public var maxFPS: Double
        /// One-way delay of the site's own link (its topology network conditions).
        public var oneWayMs: Double
        public init(id: String, kind: String, slots: Int, gpuModel: String, maxFPS: Double = 60, oneWayMs: Double = 0) {
            self.id = id; self.kind = kind; self.slots = slots; self.tflops = DeviceCatalog.renderGPU(gpuModel) ?? 30; self.maxFPS = maxFPS; self.oneWayMs = oneWayMs
        }
    }

    public struct Settings: Sendable {
        public var seconds = 120.0
        public var tickHz = 20.0
        /// The world's own one-way delay.
        public var worldOneWayMs = 0.0
        public var seed: UInt64 = 1
        /// Varies the players' own randomness (device load, behaviour) between repetitions of one
        /// spec; 0 is the spec's own run.
        public var runSeed: UInt64 = 0
        public var entities = 64
        /// Seconds a site is down: (site, from, to).
        public var siteDown: [(site: String, from: Double, to: Double)] = []
        /// Seconds a site's link is slowed: (site, from, to, added one-way ms).
        public var siteSlow: [(site: String, from: Double, to: Double, addMs: Double)] = []
        public var deadAfterSeconds = 2.0
        public init() {}
    }

    public struct Window: Equatable, Sendable { public var t: Double; public var fps: Double; public var place: String }
    public struct Switch: Equatable, Sendable {
        public var player: String, from: String, to: String
        public var t: Double
        public var forced = false, rolledBack = false
    }
    public struct Result: Sendable {
        public var windows: [String: [Window]] = [:]
        public var switches: [Switch] = []
        public var meanFPS: Double {
            let all = windows.values.flatMap { $0.map(\.fps) }
            return all.isEmpty ? 0 : all.reduce(0, +) / Double(all.count)
        }
        public var completedSwitches: Int { switches.filter { !$0.rolledBack }.count }
    }

    struct P {
        var id: String
        var setup: PlayerSetup
        var rng: SplitMix64
        var load: Double
        var place = "local"
        /// A switch under way: target and when it completes (or fails).
        var target: String?
        var targetReadyAt = 0.0
        var lastSwitchAt = 0.0
        var battery: Double
        var fpsHistory: [(fps: Double, place: String)] = []
        var measured: [String: Double] = [:]
        /// Frozen until (a fall-back in progress).
        var frozenUntil = 0.0
        var heading: Double
        var view: PlayerView?
    }

    public static func run(players: [(id: String, setup: PlayerSetup)], sites: [Site], policy: RenderPolicy, settings: Settings) -> Result {
        var result = Result()
        // The world at 2 Hz (half-second views): coarser than the server's ticks, the same terrain,
        // entities and behaviours; what changes per half second is what a frame sees.
        let viewHz = 2.0
        var world = VoxelWorld(seed: settings.seed, tickHz: viewHz, entities: settings.entities)
        world.chunksPerTick = Int(16 * settings.tickHz / viewHz)   // the server's pace per second
        var ps: [P] = players.map { p in
            world.join(p.id, viewDistance: p.setup.viewDistance)
            var r = SplitMix64(seed: stableHash(p.id) ^ (settings.runSeed &* 0x9E37_79B9_7F4A_7C15))
            return P(id: p.id, setup: p.setup, rng: r, load: p.setup.otherLoad, battery: p.setup.battery, heading: { r.uniform() * 2 * .pi }())
        }
        let siteByID = Dictionary(uniqueKeysWithValues: sites.map { ($0.id, $0) })
        func alive(_ site: String, _ t: Double) -> Bool { !settings.siteDown.contains { $0.site == site && t >= $0.from && t < $0.to } }
        func detectedDead(_ site: String, _ t: Double) -> Bool { settings.siteDown.contains { $0.site == site && t >= $0.from + settings.deadAfterSeconds && t < $0.to } }
        var used: [String: Int] = [:]
        let tickWaitMs = 500 / settings.tickHz
        func localLatency(_ p: P, frameMs: Double) -> Double { 2 * (p.setup.network.oneWayMs + settings.worldOneWayMs) + tickWaitMs + frameMs }
        func siteOneWay(_ s: Site, _ t: Double) -> Double {
            s.oneWayMs + settings.siteSlow.filter { $0.site == s.id && t >= $0.from && t < $0.to }.reduce(0) { $0 + $1.addMs }
        }
        func streamLatency(_ p: P, _ s: Site, _ t: Double) -> Double {
            let site = siteOneWay(s, t)
            return 2 * (p.setup.network.oneWayMs + site) + 2 * (site + settings.worldOneWayMs) + tickWaitMs + FrameModel.encodeMs + FrameModel.decodeMs + 500 / s.maxFPS
        }
        let seconds = Int(settings.seconds.rounded(.up))
        for second in 0..<seconds {
            let t0 = Double(second)
            // Views for this second (two half-second world steps).
            var views: [[String: PlayerView]] = []
            for half in 0..<Int(viewHz) {
                for i in ps.indices {
                    let v = ps[i].view
                    var a = ps[i].setup.behaviour.action(x: v?.x ?? 0, z: v?.z ?? 0, heading: ps[i].heading, tick: UInt64(second * 2 + half), rng: &ps[i].rng)
                    a.edit = a.edit.flatMap { e in abs(Double(e.x) - (v?.x ?? 0)) <= 8 && abs(Double(e.z) - (v?.z ?? 0)) <= 8 ? e : nil }
                    ps[i].heading = a.heading
                    try? world.apply(a, for: ps[i].id)
                }
                let vs = world.step()
                for i in ps.indices { ps[i].view = vs[ps[i].id] }
                views.append(vs)
            }
            for i in ps.indices {
                var p = ps[i]
                p.load = min(0.9, max(0, p.load + 0.3 * (p.setup.otherLoad - p.load) + 0.12 * p.rng.normal()))
                // A site that dies under a player: frames stop; after the silence timeout the player
                // renders locally again (a cold local start: every chunk meshed).
                if p.place != "local" && !alive(p.place, t0 + 1) && p.frozenUntil <= t0 {
                    let downAt = max(t0, settings.siteDown.first { $0.site == p.place && t0 + 1 >= $0.from && t0 + 1 < $0.to }?.from ?? t0)
                    let v = views[0][p.id]!
                    var cold = v; cold.newChunks = v.visibleChunks
                    let warm = p.setup.streamSilenceSeconds + 2 * (p.setup.network.oneWayMs + settings.worldOneWayMs) / 1000 + 1 / settings.tickHz
                        + FrameModel.localFrameMs(cold, tflops: p.setup.device.gpuTFLOPS, otherLoad: p.load, rng: &p.rng) / 1000
                    result.switches.append(Switch(player: p.id, from: p.place, to: "local", t: downAt + p.setup.streamSilenceSeconds, forced: true))
                    used[p.place, default: 1] -= 1
                    p.place = "local"; p.target = nil; p.frozenUntil = downAt + warm; p.lastSwitchAt = downAt
                }
                // A switch completes (the new place's first frame) or fails (no slot; site gone).
                var switchAt: Double?
                if let target = p.target, p.targetReadyAt < t0 + 1 {
                    if target != "local" && (!alive(target, p.targetReadyAt) || (used[target] ?? 0) >= siteByID[target]!.slots) {
                        result.switches.append(Switch(player: p.id, from: p.place, to: target, t: p.targetReadyAt, rolledBack: true))
                    } else {
                        if target != "local" { used[target, default: 0] += 1 }
                        if p.place != "local" { used[p.place, default: 1] -= 1 }
                        result.switches.append(Switch(player: p.id, from: p.place, to: target, t: p.targetReadyAt))
                        switchAt = max(t0, p.targetReadyAt)
                        p.place = target; p.lastSwitchAt = switchAt!
                    }
                    p.target = nil
                }
                // Frames of this second: local frames sampled from the frame model, or the stream's rate.
                var frames = 0.0
                var localMs: [Double] = []
                func localFrames(from a: Double, to b: Double) {
                    var at = a
                    var meshed = -1
                    while at < b {
                        let index = min(views.count - 1, Int((at - t0) * viewHz))
                        var w = views[index][p.id]!
                        // New chunks are meshed once, by the first frame drawn from the view that brought them.
                        if index == meshed { w.newChunks = 0 } else { meshed = index }
                        let ms = FrameModel.localFrameMs(w, tflops: p.setup.device.gpuTFLOPS, otherLoad: p.load, rng: &p.rng)
                        localMs.append(ms)
                        at += ms / 1000
                        if at <= b { frames += 1 }
                    }
                }
                func streamFrames(_ site: String, from a: Double, to b: Double) {
                    let s = siteByID[site]!
                    let v = views[0][p.id]!
                    let fps = min(s.maxFPS, FrameModel.displayHz, 1000 / FrameModel.remoteRenderMs(v, siteTFLOPS: s.tflops, slots: s.slots))
                    frames += fps * max(0, b - a)
                }
                let start = max(t0, p.frozenUntil)
                let places: [(String, Double, Double)] = switchAt.map { at in [(result.switches.last!.from, start, at), (p.place, at, t0 + 1)] } ?? [(p.place, start, t0 + 1)]
                for (place, a, b) in places where b > a {
                    if place == "local" { localFrames(from: a, to: b) } else if alive(place, a) { streamFrames(place, from: a, to: b) }
                }
                let fps = frames
                p.fpsHistory.append((fps, p.place))
                if p.place == "local", !localMs.isEmpty {
                    p.measured["local"] = localLatency(p, frameMs: PlayerMeter.percentile(localMs, 50))
                } else if let s = siteByID[p.place] {
                    p.measured[p.place] = streamLatency(p, s, t0)
                }
                let busy = p.place == "local" ? 1.0 : 0
                let watts = FrameModel.deviceWatts(p.setup.device, local: p.place == "local", gpuBusy: busy, network: p.setup.network.name)
                if !p.setup.device.pluggedIn && !(p.setup.dockAfterSeconds.map { t0 >= $0 } ?? false) {
                    p.battery = max(0, p.battery - watts / (p.setup.device.batteryWh * 3600))
                }
                result.windows[p.id, default: []].append(Window(t: t0, fps: fps, place: p.place))
                ps[i] = p
            }
            // The policy's round on last second's reports.
            let snaps: [PlayerSnapshot] = ps.map { p in
                var s = PlayerSnapshot(id: p.id, device: p.setup.device.name, network: p.setup.network.name, current: p.place)
                s.switching = p.target != nil || p.frozenUntil > t0 + 1
                s.lastSwitchAt = p.lastSwitchAt
                let recent = p.fpsHistory.suffix(5).filter { $0.place == p.place }.map(\.fps)
                s.fps = recent.isEmpty ? 0 : recent.reduce(0, +) / Double(recent.count)
                s.fpsRange = (recent.max() ?? 0) - (recent.min() ?? 0)
                let localRecent = p.fpsHistory.suffix(60).filter { $0.place == "local" }.suffix(10).map(\.fps)
                if let v = p.view {
                    s.localFPSEstimate = p.place == "local" && localRecent.count >= 3 ? localRecent.reduce(0, +) / Double(localRecent.count)
                        : FrameModel.expectedLocalFPS(v, tflops: p.setup.device.gpuTFLOPS, otherLoad: p.setup.otherLoad)
                }
                s.localRangeEstimate = localRecent.count >= 3 ? localRecent.max()! - localRecent.min()! : s.localFPSEstimate * 0.5
                s.accessRTTMs = 2 * p.setup.network.oneWayMs; s.bandwidthMbps = p.setup.network.bandwidthMbps
                s.battery = p.battery; s.pluggedIn = p.setup.device.pluggedIn || (p.setup.dockAfterSeconds.map { t0 >= $0 } ?? false)
                s.measuredLatencyMs = p.measured
                return s
            }
            var placedAt: [String: Int] = [:]
            for p in ps { if p.place != "local" { placedAt[p.place, default: 0] += 1 }; if let x = p.target, x != "local" { placedAt[x, default: 0] += 1 } }
            let siteSnaps = sites.map { s in
                RenderSiteSnapshot(id: s.id, kind: s.kind, slots: s.slots, used: max(used[s.id] ?? 0, placedAt[s.id] ?? 0), alive: !detectedDead(s.id, t0 + 1),
                                   maxFPS: s.maxFPS, rttMs: 2 * siteOneWay(s, t0))
            }
            for d in policy.decide(players: snaps, sites: siteSnaps, now: t0 + 1) {
                guard let i = ps.firstIndex(where: { $0.id == d.player }) else { continue }
                // The placement reaches the player within the heartbeat; the warm-up: a round trip to
                // the new renderer and on to the world, a tick, a first frame.
                let p = ps[i]
                let warm: Double
                if d.place == "local" {
                    warm = (2 * (p.setup.network.oneWayMs + settings.worldOneWayMs) + tickWaitMs * 2 + 1000 / max(1, snaps[i].localFPSEstimate)) / 1000
                } else {
                    let s = siteByID[d.place]!
                    let site = siteOneWay(s, t0)
                    warm = (2 * (p.setup.network.oneWayMs + site) + 2 * (site + settings.worldOneWayMs) + tickWaitMs * 2 + FrameModel.encodeMs + 1000 / s.maxFPS) / 1000
                }
                ps[i].target = d.place
                ps[i].targetReadyAt = t0 + 1 + 0.1 + warm
            }
        }
        return result
    }
}
