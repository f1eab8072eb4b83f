import Foundation

/// What a render policy knows of a player (its own reports) when it decides.
public struct PlayerSnapshot: Sendable, Equatable {
    public var id: String
    public var device: String
    public var network: String
    /// Where it renders now ("local" or a render site's node id) and whether a switch is under way.
    public var current: String
    public var switching = false
    /// When it last changed place (s, the policy's clock); the start of the run if never.
    public var lastSwitchAt: Double = 0
    /// FPS and FPS range measured over the last windows where it renders now.
    public var fps: Double = 0
    public var fpsRange: Double = 0
    /// FPS its device would render locally for its current view (modelled by the player even while
    /// it streams), and the range to expect.
    public var localFPSEstimate: Double = 0
    public var localRangeEstimate: Double = 0
    /// Link to its access network: round trip (ms) and bandwidth (Mbit/s) as measured or configured.
    public var accessRTTMs: Double = 0
    public var bandwidthMbps: Double = 0
    public var battery: Double = 1
    public var pluggedIn = false
    /// Input-to-frame latency (ms) last measured at each place the player has rendered at: what
    /// the policy uses instead of its estimate once it knows.
    public var measuredLatencyMs: [String: Double] = [:]
    public init(id: String, device: String, network: String, current: String) {
        self.id = id; self.device = device; self.network = network; self.current = current
    }
}

/// A render site as the policy sees it.
public struct RenderSiteSnapshot: Sendable, Equatable {
    public var id: String
    /// "edge" or "cloud".
    public var kind: String
    public var slots: Int
    /// Slots taken (reported by the site, plus placements sent and not yet reported).
    public var used: Int
    public var alive: Bool
    public var maxFPS: Double
    /// Round trip from the site to the players' access networks (ms).
    public var rttMs: Double
    public init(id: String, kind: String, slots: Int, used: Int, alive: Bool = true, maxFPS: Double = 60, rttMs: Double = 0) {
        self.id = id; self.kind = kind; self.slots = slots; self.used = used; self.alive = alive; self.maxFPS = maxFPS; self.rttMs = rttMs
    }
    public var free: Int { max(0, slots - used) }
}

/// A placement decision: move `player` to `place` ("local" or a site id), and why.
public struct RenderDecision: Sendable, Equatable, CustomStringConvertible {
    public var player: String
    public var place: String
    public var reason: String
    public init(player: String, place: String, reason: String) { self.player = player; self.place = place; self.reason = reason }
    public var description: String { "\(player) → \(place): \(reason)" }
}

/// Decides where every player renders (pure; the coordinator and the twin run the same code).
/// Returns only changes. `now` is seconds since the run started.
public protocol RenderPolicy: Sendable {
    var name: String { get }
    func decide(players: [PlayerSnapshot], sites: [RenderSiteSnapshot], now: Double) -> [RenderDecision]
}

public enum RenderPolicies {
    public static let names = ["local", "edge", "cloud", "scripted", "adaptive"]

    public enum PolicyError: Error, CustomStringConvertible {
        case unknown(String), badScript(String)
        public var description: String {
            switch self {
            case .unknown(let n): return "unknown render policy '\(n)'; known: \(RenderPolicies.names.joined(separator: ", "))"
            case .badScript(let s): return "scripted switch '\(s)': \(ScriptedRender.Step.format)"
            }
        }
    }

    public static func named(_ name: String, script: [String] = []) throws -> RenderPolicy {
        switch name.lowercased() {
        case "local": return StaticRender(kind: nil)
        case "edge": return StaticRender(kind: "edge")
        case "cloud": return StaticRender(kind: "cloud")
        case "scripted": return try ScriptedRender(steps: script.map(ScriptedRender.Step.parse))
        case "adaptive": return AdaptiveRender()
        default: throw PolicyError.unknown(name)
        }
    }

    /// Picks a site of `kind` for a player among those alive with a free slot (fewest used first),
    /// counting the slots this round's decisions take.
    static func pick(kind: String?, sites: [RenderSiteSnapshot], taken: [String: Int]) -> RenderSiteSnapshot? {
        sites.filter { ($0.kind == kind || kind == nil) && $0.alive && $0.free - (taken[$0.id] ?? 0) > 0 }
            .min { ($0.used + (taken[$0.id] ?? 0), $0.rttMs, $0.id) < ($1.used + (taken[$1.id] ?? 0), $1.rttMs, $1.id) }
    }
}

/// The anchors' static deployments: every player local, or at an edge / cloud site. A player whose
/// site is gone or full renders locally (the fall-back, stated in the reason).
public struct StaticRender: RenderPolicy {
    public let kind: String?
    public var name: String { kind ?? "local" }
    public func decide(players: [PlayerSnapshot], sites: [RenderSiteSnapshot], now: Double) -> [RenderDecision] {
        var out: [RenderDecision] = []
        var taken: [String: Int] = [:]
        let byID = Dictionary(uniqueKeysWithValues: sites.map { ($0.id, $0) })
        for p in players.sorted(by: { $0.id < $1.id }) where !p.switching {
            guard let kind else {
                if p.current != "local" { out.append(RenderDecision(player: p.id, place: "local", reason: "policy local")) }
                continue
            }
            if let s = byID[p.current], s.kind == kind, s.alive { continue }
            if let s = RenderPolicies.pick(kind: kind, sites: sites, taken: taken) {
                taken[s.id, default: 0] += 1
                out.append(RenderDecision(player: p.id, place: s.id, reason: "policy \(kind)"))
            } else if p.current != "local" {
                out.append(RenderDecision(player: p.id, place: "local", reason: "no \(kind) site with a free slot: local fall-back"))
            }
        }
        return out
    }
}

/// Switches at given times (PolkaDOTS-style experiment actions): `AT_SECONDS PLAYER PLACE`, with
/// PLAYER a node id or `*`, PLACE `local`, `edge`, `cloud` or a site id.
public struct ScriptedRender: RenderPolicy {
    public struct Step: Sendable, Equatable {
        public var at: Double
        public var player: String
        public var place: String
        public static let format = "expected 'AT_SECONDS PLAYER PLACE' (PLAYER an id or *, PLACE local, edge, cloud or a render site's id)"
        public static func parse(_ s: String) throws -> Step {
            let parts = s.split(separator: " ").map(String.init)
            guard parts.count == 3, let at = Double(parts[0]), at >= 0 else { throw RenderPolicies.PolicyError.badScript(s) }
            return Step(at: at, player: parts[1], place: parts[2])
        }
    }
    public let steps: [Step]
    public var name: String { "scripted" }
    public init(steps: [Step]) { self.steps = steps.sorted { $0.at < $1.at } }

    public func decide(players: [PlayerSnapshot], sites: [RenderSiteSnapshot], now: Double) -> [RenderDecision] {
        var out: [RenderDecision] = []
        var taken: [String: Int] = [:]
        for p in players.sorted(by: { $0.id < $1.id }) where !p.switching {
            // The latest step due for this player says where it should be.
            guard let step = steps.last(where: { $0.at <= now && ($0.player == "*" || $0.player == p.id) }) else { continue }
            let want: String
            switch step.place {
            case "local": want = "local"
            case "edge", "cloud":
                if let s = sites.first(where: { $0.id == p.current }), s.kind == step.place, s.alive { continue }
                guard let s = RenderPolicies.pick(kind: step.place, sites: sites, taken: taken) else {
                    if p.current != "local" { out.append(RenderDecision(player: p.id, place: "local", reason: "scripted \(step.place) at \(step.at) s: no site free, local")) }
                    continue
                }
                taken[s.id, default: 0] += 1
                want = s.id
            default:
                guard sites.contains(where: { $0.id == step.place && $0.alive }) else {
                    if p.current != "local" { out.append(RenderDecision(player: p.id, place: "local", reason: "scripted site \(step.place) is not alive: local")) }
                    continue
                }
                want = step.place
            }
            if want != p.current { out.append(RenderDecision(player: p.id, place: want, reason: "scripted at \(step.at) s")) }
        }
        return out
    }
}

/// Our policy. Per player it scores every place it could render at from what was measured:
///
///   utility = min(FPS, 60)/60 − 0.5 · (FPS range / 60) − 0.15 · latency/100 ms − over-budget penalty + battery term
///
/// with local FPS and range as measured (or as the player's model estimates them while it streams),
/// input-to-frame latency as last measured at each place (estimated from round trips until then),
/// a site's FPS bounded by its cap and by the player's bandwidth (a stream needs 1.5 Mbit/s at
/// least), and the input-to-frame latency over a 100 ms budget penalised (0.5 per 100 ms over). On
/// battery, a player below half charge gains from moving rendering off the device (up to +0.15).
/// It moves a player only when the gain beats a hysteresis margin (0.15) and the player has stayed
/// put for the dwell time (10 s), unless its place is gone. Placement is joint: scarce edge slots
/// go to the players who gain most from them; others try the cloud, then stay.
public struct AdaptiveRender: RenderPolicy {
    public var name: String { "adaptive" }
    public var hysteresis = 0.15
    public var dwellSeconds = 10.0
    public var latencyBudgetMs = 100.0
    public init() {}

    /// Input-to-frame latency of a stream from a site: both ways through access and site, render,
    /// encode and decode, and a frame interval on average for the frame to come.
    func streamLatencyMs(_ p: PlayerSnapshot, _ s: RenderSiteSnapshot) -> Double { p.accessRTTMs + s.rttMs + 3 + 2 + 1000 / max(1, s.maxFPS) }
    func localLatencyMs(_ p: PlayerSnapshot) -> Double { p.accessRTTMs + 1000 / max(1, p.localFPSEstimate) }

    public func utility(_ p: PlayerSnapshot, at place: String, sites: [String: RenderSiteSnapshot]) -> Double? {
        var fps: Double, range: Double, latency: Double, offloads: Bool
        if place == "local" {
            fps = p.current == "local" && p.fps > 0 ? p.fps : p.localFPSEstimate
            range = p.current == "local" && p.fps > 0 ? p.fpsRange : p.localRangeEstimate
            latency = p.measuredLatencyMs["local"] ?? localLatencyMs(p); offloads = false
        } else {
            guard let s = sites[place], s.alive else { return nil }
            guard p.bandwidthMbps >= 1.5 else { return nil }
            if p.current == place && p.fps > 0 { fps = p.fps; range = p.fpsRange } else { fps = min(s.maxFPS, 60); range = 4 }
            latency = p.measuredLatencyMs[place] ?? streamLatencyMs(p, s); offloads = true
        }
        var u = min(fps, 60) / 60 - 0.5 * min(range, 60) / 60
        u -= 0.15 * latency / 100 + 0.5 * max(0, latency - latencyBudgetMs) / 100
        if offloads && !p.pluggedIn && p.battery < 0.5 { u += 0.3 * (0.5 - p.battery) }
        return u
    }

    public func decide(players: [PlayerSnapshot], sites: [RenderSiteSnapshot], now: Double) -> [RenderDecision] {
        let byID = Dictionary(uniqueKeysWithValues: sites.map { ($0.id, $0) })
        var free = Dictionary(uniqueKeysWithValues: sites.map { ($0.id, $0.alive ? $0.free : 0) })
        struct Want { let player: PlayerSnapshot; let place: String; let gain: Double; let utility: Double; let forced: Bool }
        var wants: [Want] = []
        var out: [RenderDecision] = []
        for p in players.sorted(by: { $0.id < $1.id }) where !p.switching {
            let here = utility(p, at: p.current, sites: byID)
            let forced = here == nil   // its site is gone or cannot stream to it
            if !forced && now - p.lastSwitchAt < dwellSeconds { continue }
            // Every alternative, best first; the joint pass below gives slots out.
            var options: [(String, Double)] = [("local", utility(p, at: "local", sites: byID)!)]
            for s in sites where s.alive && s.id != p.current { if let u = utility(p, at: s.id, sites: byID) { options.append((s.id, u)) } }
            if let h = here { options.append((p.current, h)) }
            options.sort { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
            for (place, u) in options {
                let gain = u - (here ?? -.infinity)
                if place == p.current { break }
                if !forced && gain < hysteresis { break }
                wants.append(Want(player: p, place: place, gain: gain, utility: u, forced: forced))
            }
        }
        // Forced moves first, then the largest gains; one move per player; a site only while it has slots.
        wants.sort { ($0.forced ? 1 : 0, $0.gain, $1.player.id) > ($1.forced ? 1 : 0, $1.gain, $0.player.id) }
        var moved = Set<String>()
        for w in wants where !moved.contains(w.player.id) {
            if w.place != "local" {
                guard (free[w.place] ?? 0) > 0 else { continue }
                free[w.place]! -= 1
            }
            moved.insert(w.player.id)
            let why = w.forced ? "\(w.player.current) cannot serve it" : String(format: "utility %.2f → %.2f", w.utility - w.gain, w.utility)
            out.append(RenderDecision(player: w.player.id, place: w.place, reason: why))
        }
        // A forced player that got nothing goes local (always possible).
        for p in players where !p.switching && !moved.contains(p.id) && p.current != "local" && utility(p, at: p.current, sites: byID) == nil {
            out.append(RenderDecision(player: p.id, place: "local", reason: "\(p.current) cannot serve it; no site free: local"))
        }
        return out.sorted { $0.player < $1.player }
    }
}
