import Cluster
import Coordinator
import Foundation
import Protocol
import Scheduling

/// Feature "game", coordinator side: where every player renders. It keeps each player's placement
/// durable (`game_players`: a restarted coordinator sends the same ones again), runs the render
/// policy once a second over the players' and sites' latest reports, and sends each change to the
/// player as a versioned `Placement` (at least once; a player ignores an older version). Switch
/// records and FPS windows that players report are stored as they arrive (`game_switches`,
/// `game_windows`) and settled, so none is lost across a crash of either side.
public final class GameController: CoordinatorFeature {
    public let features = [GameWire.feature]
    public let requestBodies: [String] = []
    public let storeSchema = [
        "CREATE TABLE IF NOT EXISTS game_players (player TEXT PRIMARY KEY, place TEXT NOT NULL, version INTEGER NOT NULL, reason TEXT NOT NULL, since INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS game_switches (player TEXT NOT NULL, key TEXT NOT NULL, record BLOB NOT NULL, PRIMARY KEY(player, key))",
        "CREATE TABLE IF NOT EXISTS game_windows (player TEXT NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY(player, key))",
    ]
    public let policy: RenderPolicy
    /// Seconds between policy rounds.
    public var periodSeconds = 1.0

    struct Placed { var place: String; var version: UInt64; var reason: String; var sinceWall: Int64 }
    private var placed: [String: Placed] = [:]
    private var latest: [String: (report: PlayerReport, at: Int64)] = [:]
    /// Input-to-frame latency last measured per player and place (the policy learns from it).
    private var measured: [String: [String: Double]] = [:]
    private var siteReports: [String: RenderSiteReport] = [:]
    private var worldReport: WorldReport?
    private var worldNode = ""
    /// The world address placements last carried: when it changes, every player gets it again.
    private var sentWorld = ""
    private var startWall: Int64 = 0
    private var nextRound: Int64 = 0
    /// Players whose current placement has not been sent in this life of theirs.
    private var unsent = Set<String>()
    public private(set) var decisions = 0

    public init(policy: RenderPolicy) { self.policy = policy }

    public func start(_ s: CoordinatorServices, restoredNodes: [NodeRecord]) throws {
        startWall = s.clock.wallNanos()
        for row in try s.store.database.run("SELECT player, place, version, reason, since FROM game_players") {
            placed[row[0].text] = Placed(place: row[1].text, version: UInt64(row[2].int), reason: row[3].text, sinceWall: row[4].int)
            unsent.insert(row[0].text)
        }
    }

    private func world(_ s: CoordinatorServices) -> PeerEndpoint? {
        guard let w = s.membership.nodes.values.filter({ $0.info.kind == .world && $0.info.state == .alive && !$0.info.dataEndpoint.isEmpty })
            .min(by: { $0.info.nodeID < $1.info.nodeID }) else { return nil }
        var e = PeerEndpoint(); e.node = w.info.nodeID; e.endpoint = w.info.dataEndpoint; e.publicKey = w.info.dataPublicKey
        return e
    }

    private func endpoint(_ node: String, _ s: CoordinatorServices) -> PeerEndpoint? {
        guard let n = s.membership.nodes[node], !n.info.dataEndpoint.isEmpty else { return nil }
        var e = PeerEndpoint(); e.node = node; e.endpoint = n.info.dataEndpoint; e.publicKey = n.info.dataPublicKey
        return e
    }

    func sites(_ s: CoordinatorServices) -> [RenderSiteSnapshot] {
        // Slots a site serves now, as it reported, or at least the players placed there.
        var placedAt: [String: Int] = [:]
        for (_, p) in placed where p.place != "local" { placedAt[p.place, default: 0] += 1 }
        return s.membership.nodes.values.filter { $0.info.kind == .render }.sorted { $0.info.nodeID < $1.info.nodeID }.map { n in
            let c = n.info.capabilities.render
            let id = n.info.nodeID
            let used = max(Int(siteReports[id]?.slotsUsed ?? 0), placedAt[id] ?? 0)
            // Distance from the players: the site's round trip to the coordinator stands for it.
            let rtt = n.info.hasClock && n.info.clock.samples > 0 ? Double(n.info.clock.errorBoundNanos) * 2 / 1e6 : 0
            return RenderSiteSnapshot(id: id, kind: c.siteKind == .edge ? "edge" : "cloud", slots: Int(c.renderSlots), used: used,
                                      alive: n.info.state == .alive && !n.info.dataEndpoint.isEmpty, maxFPS: Double(max(1, c.maxFps)), rttMs: rtt)
        }
    }

    public func nodeRegistered(_ r: Register, newLife: Bool, _ s: CoordinatorServices) {
        if r.kind == .player {
            if placed[r.nodeID] == nil { placed[r.nodeID] = Placed(place: "local", version: 1, reason: "joined", sinceWall: s.clock.wallNanos()); persist(r.nodeID, s) }
            if newLife { unsent.insert(r.nodeID) }
        }
        if r.kind == .world { sentWorld = "" }
    }

    public func nodeDead(_ nodeID: String, _ s: CoordinatorServices) {
        if let n = s.membership.nodes[nodeID], n.info.kind == .render {
            let on = placed.filter { $0.value.place == nodeID }.map(\.key)
            if !on.isEmpty { s.event(nodeID, "game", "render site dead: \(on.count) players fall back") }
        }
    }

    private func persist(_ player: String, _ s: CoordinatorServices) {
        guard let p = placed[player] else { return }
        do {
            _ = try s.store.database.run("INSERT OR REPLACE INTO game_players(player, place, version, reason, since) VALUES(?,?,?,?,?)",
                                         [.text(player), .text(p.place), .int(Int64(p.version)), .text(p.reason), .int(p.sinceWall)])
        } catch { s.logLimited("game_store", "could not store \(player)'s placement: \(error)") }
    }

    private func send(_ player: String, world: PeerEndpoint, _ s: CoordinatorServices) -> Bool {
        guard let p = placed[player] else { return false }
        var m = RenderPlacement()
        m.place = p.place; m.version = p.version; m.reason = p.reason; m.world = world
        if p.place != "local" {
            guard let e = endpoint(p.place, s) else { return false }
            m.site = e
        }
        var c = GameCommand(); c.place = m
        do { try s.enqueueTransient(.feature(GameWire.feature, node: player, c)); return true } catch {
            s.logLimited("game_send", "could not send \(player)'s placement: \(error)")
            return false
        }
    }

    public func turn(_ s: CoordinatorServices) -> Bool {
        guard let w = world(s) else { return false }
        var sent = false
        if w.endpoint != sentWorld { sentWorld = w.endpoint; worldNode = w.node; unsent.formUnion(placed.keys) }
        let now = s.clock.monotonicNanos()
        if now >= nextRound {
            nextRound = now + Int64(periodSeconds * 1e9)
            let players = playerSnapshots(s)
            let t = Double(s.clock.wallNanos() - startWall) / 1e9
            for d in policy.decide(players: players, sites: sites(s), now: t) {
                guard let old = placed[d.player] else { continue }
                placed[d.player] = Placed(place: d.place, version: old.version + 1, reason: d.reason, sinceWall: s.clock.wallNanos())
                persist(d.player, s)
                s.event(d.player, "game", "\(old.place) → \(d.place): \(d.reason)")
                unsent.insert(d.player)
                decisions += 1
            }
        }
        for p in unsent.sorted() {
            guard let n = s.membership.nodes[p], n.info.state == .alive else { continue }
            if send(p, world: w, s) { unsent.remove(p); sent = true }
        }
        return sent
    }

    func playerSnapshots(_ s: CoordinatorServices) -> [PlayerSnapshot] {
        s.membership.nodes.values.filter { $0.info.kind == .player && $0.info.state == .alive }.compactMap { n in
            let id = n.info.nodeID
            guard let p = placed[id], let r = latest[id]?.report else { return nil }
            var snap = PlayerSnapshot(id: id, device: r.device, network: r.network, current: p.place)
            // Still on its way, or the player has not taken it yet: not a candidate this round.
            snap.switching = r.switching || r.placementVersion < p.version || unsent.contains(id) || r.place != p.place && r.place != "local"
            snap.lastSwitchAt = Double(p.sinceWall - startWall) / 1e9
            snap.fps = r.place == p.place ? r.fps : 0
            snap.fpsRange = r.fpsRange
            snap.localFPSEstimate = r.localFpsEstimate; snap.localRangeEstimate = r.localRangeEstimate
            snap.accessRTTMs = r.accessRttMs; snap.bandwidthMbps = r.linkMbps
            snap.battery = r.battery; snap.pluggedIn = r.pluggedIn
            snap.measuredLatencyMs = measured[id] ?? [:]
            return snap
        }
    }

    public func reports(_ reports: [FeatureReport], feature: String, from nodeID: String, clockOffsetNanos: Int64, _ s: CoordinatorServices) -> [String] {
        var settled: [String] = []
        for r in reports {
            switch r.key {
            case "player":
                guard let m = try? PlayerReport(serializedBytes: r.body) else { s.count("malformed_player_report"); settled.append(r.key); continue }
                latest[nodeID] = (m, s.clock.monotonicNanos())
                settled.append(r.key)
                if !m.switching && m.inputLatencyP50Ms > 0 && m.place != "none" { measured[nodeID, default: [:]][m.place] = m.inputLatencyP50Ms }
                // A player that fell back on its own (its site went silent) is local now: the
                // placement follows the fact, so the policy starts from where it really is.
                if let p = placed[nodeID], p.place != "local", m.place == "local", !m.switching, m.placementVersion >= p.version, m.fallbacks > 0 {
                    placed[nodeID] = Placed(place: "local", version: p.version + 1, reason: "fell back: \(p.place) stopped serving", sinceWall: s.clock.wallNanos())
                    persist(nodeID, s)
                    s.event(nodeID, "game", "fell back to local from \(p.place)")
                    unsent.insert(nodeID)
                }
            case "site":
                if let m = try? RenderSiteReport(serializedBytes: r.body) { siteReports[nodeID] = m } else { s.count("malformed_site_report") }
                settled.append(r.key)
            case "world":
                if let m = try? WorldReport(serializedBytes: r.body) { worldReport = m; worldNode = nodeID } else { s.count("malformed_world_report") }
                settled.append(r.key)
            default:
                let table = r.key.hasPrefix("switch-") ? "game_switches" : r.key.hasPrefix("fps-") ? "game_windows" : nil
                guard let table else { s.count("unknown_game_report"); settled.append(r.key); continue }
                do {
                    _ = try s.store.database.run("INSERT OR IGNORE INTO \(table) VALUES(?,?,?)", [.text(nodeID), .text(r.key), .blob(Array(r.body))])
                    settled.append(r.key)
                } catch { s.logLimited("game_store", "could not store \(nodeID)'s \(r.key): \(error)") }
            }
        }
        return settled
    }

    /// The game API only reads.
    public func access(_ envelope: Envelope) -> AccessNeed { .anyRole }

    public func handleRequest(_ envelope: Envelope, _ s: CoordinatorServices) -> Envelope.OneOf_Body? {
        guard case .featureRequest(let m)? = envelope.body else { return nil }
        guard let request = try? GameApiRequest(serializedBytes: m.body) else {
            var e = ErrorReply(); e.code = .invalidRequest; e.message = "the game feature expects a GameApiRequest"
            return .error(e)
        }
        var reply = GameApiReply()
        reply.policy = policy.name
        reply.worldNode = worldNode
        if let w = worldReport { reply.world = w }
        let now = s.clock.monotonicNanos()
        for (id, p) in placed.sorted(by: { $0.key < $1.key }) where request.player.isEmpty || id == request.player {
            var row = PlayerRow()
            row.player = id
            if let l = latest[id] { row.report = l.report; row.ageSeconds = Double(now - l.at) / 1e9 } else { row.report.place = p.place }
            row.alive = s.membership.nodes[id]?.info.state == .alive
            reply.players.append(row)
        }
        for site in sites(s) {
            var r = SiteRow(); r.site = site.id; r.kind = site.kind; r.slots = UInt32(site.slots); r.used = UInt32(site.used); r.alive = site.alive
            r.players = siteReports[site.id]?.players ?? []
            reply.sites.append(r)
        }
        do {
            for row in try s.store.database.run("SELECT player, record FROM game_switches ORDER BY rowid") where request.player.isEmpty || row[0].text == request.player {
                if let r = try? SwitchRecord(serializedBytes: row[1].blob) { reply.switches.append(r) }
            }
        } catch { reply.notes.append("switch records unreadable: \(error)") }
        if request.includeWindows {
            do {
                var by: [String: [FpsWindows]] = [:]
                for row in try s.store.database.run("SELECT player, body FROM game_windows ORDER BY rowid") where request.player.isEmpty || row[0].text == request.player {
                    if let w = try? FpsWindows(serializedBytes: row[1].blob) { by[row[0].text, default: []].append(w) }
                }
                for (p, ws) in by.sorted(by: { $0.key < $1.key }) {
                    var x = PlayerWindows(); x.player = p; x.batches = ws.sorted { $0.firstStartUnixNanos < $1.firstStartUnixNanos }
                    reply.windows.append(x)
                }
            } catch { reply.notes.append("FPS windows unreadable: \(error)") }
        }
        if !request.player.isEmpty && reply.players.isEmpty { reply.notes.append("no player '\(request.player)'") }
        if world(s) == nil { reply.notes.append("no world server is alive: players cannot play") }
        var out = FeatureMessage(); out.feature = GameWire.feature; out.body = (try? reply.serializedData()) ?? Data()
        return .featureReply(out)
    }

    public func traceCounters() -> [String: [String: Double]] {
        var fps: [String: Double] = [:]
        for (id, l) in latest { fps[id] = l.report.fps }
        var at: [String: Double] = [:]
        for (_, p) in placed { at[p.place, default: 0] += 1 }
        return fps.isEmpty ? [:] : ["player fps": fps, "players at": at]
    }
}

extension OperatorClient {
    /// The game as the coordinator sees it: players, where each renders, FPS and latency; sites; the world.
    public func game(player: String = "", includeWindows: Bool = false, timeoutMs: Int = 5000) throws -> GameApiReply {
        var req = GameApiRequest(); req.player = player; req.includeWindows = includeWindows
        var m = FeatureMessage(); m.feature = GameWire.feature; m.body = try req.serializedData()
        let answer = try self.request(.featureRequest(m), timeoutMs: timeoutMs)
        if case .error(let e) = answer { throw OperatorClient.ClientError.unexpected(e.message) }
        guard case .featureReply(let r) = answer else { throw OperatorClient.ClientError.unexpected("the coordinator answered a game request with something else") }
        return try GameApiReply(serializedBytes: r.body)
    }
}

/// The table `strato game status` prints.
public enum GameTable {
    public static func render(_ r: GameApiReply) -> String {
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
        var s = "policy \(r.policy) · world \(r.worldNode.isEmpty ? "-" : r.worldNode)"
        if r.hasWorld { s += String(format: " · tick %llu, %u players, tick P50 %.2f ms P99 %.2f ms, variability %.1f ms, overruns %llu", r.world.tick, r.world.players, r.world.tickP50Ms, r.world.tickP99Ms, r.world.variabilityMs, r.world.overruns) }
        s += "\n\n" + pad("PLAYER", 14) + pad("DEVICE", 11) + pad("NET", 6) + pad("RENDERS AT", 16) + pad("FPS", 6) + pad("RANGE", 6) + pad("P99 ms", 8)
        s += pad("INPUT ms", 9) + pad("IN Mbps", 8) + pad("MEM GiB", 8) + pad("BATT", 6) + pad("SW", 4) + "FB\n"
        for p in r.players {
            let m = p.report
            let at = m.place + (m.switching ? "*" : "") + (p.alive ? "" : " (dead)")
            s += pad(p.player, 14) + pad(m.device, 11) + pad(m.network, 6) + pad(at, 16) + pad(String(format: "%.0f", m.fps), 6) + pad(String(format: "%.0f", m.fpsRange), 6)
            s += pad(String(format: "%.1f", m.frameP99Ms), 8) + pad(String(format: "%.0f", m.inputLatencyP50Ms), 9) + pad(String(format: "%.2f", m.bandwidthInMbps), 8)
            s += pad(String(format: "%.2f", m.memoryGib), 8) + pad(String(format: "%.0f%%", m.battery * 100), 6) + pad("\(m.switchesCompleted)", 4) + "\(m.fallbacks)\n"
        }
        if !r.sites.isEmpty {
            s += "\n" + pad("SITE", 16) + pad("KIND", 6) + pad("SLOTS", 8) + pad("OUT Mbps", 9) + "PLAYERS\n"
            for site in r.sites {
                // What the site streams: the rate its players receive, summed (their last reports).
                let out = r.players.filter { $0.report.place == site.site }.map(\.report.bandwidthInMbps).reduce(0, +)
                s += pad(site.site + (site.alive ? "" : " (dead)"), 16) + pad(site.kind, 6) + pad("\(site.used)/\(site.slots)", 8)
                    + pad(String(format: "%.2f", out), 9) + site.players.joined(separator: ", ") + "\n"
            }
        }
        s += "\n\(r.players.count) players · \(r.switches.filter { !$0.rolledBack }.count) switches, \(r.switches.filter(\.rolledBack).count) rolled back · frame times emulated (device and site GPUs from their datasheets) · * switching\n"
        for n in r.notes { s += "note: \(n)\n" }
        return s
    }
}
