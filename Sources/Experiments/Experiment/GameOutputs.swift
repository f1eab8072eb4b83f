import Features
import Foundation
import Protocol

/// What a game run measured, per player and over time, from the coordinator's stored reports:
/// FPS windows (with memory, bandwidth and input latency), switches, the world's ticks.
public struct GameAccounting: Codable, Equatable {
    public var known = false
    public var policy = ""
    public var runSeconds = 0.0
    /// The workload's start (wall clock): window and switch times count from it.
    public var startUnixNanos: Int64 = 0
    public struct Player: Codable, Equatable {
        public var id = "", device = "", network = "", place = ""
        public var meanFPS = 0.0, fpsP5 = 0.0, fpsP95 = 0.0
        public var frames: UInt64 = 0
        public var longestGapMs = 0.0
        public var inputP50Ms = 0.0, inputP99Ms = 0.0, frameP99Ms = 0.0
        public var memoryGiB = 0.0, mbpsIn = 0.0
        public var energyJoules = 0.0, battery = 1.0
        public var switches: UInt64 = 0, rolledBack: UInt64 = 0, fallbacks: UInt64 = 0
        public var windows = 0
        public var switchingAtEnd = false
        /// Windows missing between stored batches (a batch lost would show here).
        public var windowHoles = 0
        public var firstWindowSeconds = 0.0, lastWindowSeconds = 0.0
    }
    public var players: [Player] = []
    public struct Window: Codable, Equatable {
        public var player = "", place = ""
        public var t = 0.0, fps = 0.0, memoryGiB = 0.0, mbpsIn = 0.0, mbpsOut = 0.0, inputMs = 0.0
    }
    public var windows: [Window] = []
    public struct Switch: Codable, Equatable {
        public var player = "", from = "", to = "", reason = ""
        public var t = 0.0, gapMs = 0.0, warmupMs = 0.0
        public var forced = false, rolledBack = false
        /// The old renderer's last frame time before the switch (0 in older runs).
        public var oldFrameMs: Double? = nil
    }
    public var switches: [Switch] = []
    public var tickHz = 0.0, tickP50Ms = 0.0, tickP99Ms = 0.0, tickVariabilityMs = 0.0
    public var ticks: UInt64 = 0, tickOverruns: UInt64 = 0, worldPlayers = 0
    public var tickSeries: [Double] = []
    public init() {}

    /// From the game's final reply; times are seconds since `startNanos` (the workload's start).
    public init(_ r: GameApiReply?, startNanos: Int64, endNanos: Int64) {
        guard let r else { return }
        known = true
        policy = r.policy
        startUnixNanos = startNanos
        runSeconds = Double(endNanos - startNanos) / 1e9
        func sec(_ n: Int64) -> Double { Double(n - startNanos) / 1e9 }
        var windowsBy: [String: [Window]] = [:]
        var holes: [String: Int] = [:]
        for pw in r.windows {
            var nextStart: Int64?
            for b in pw.batches {
                if let n = nextStart, abs(b.firstStartUnixNanos - n) > Int64(b.windowSeconds * 0.5e9) {
                    holes[pw.player, default: 0] += max(1, Int((Double(b.firstStartUnixNanos - n) / 1e9 / b.windowSeconds).rounded()))
                }
                for (i, f) in b.fps.enumerated() {
                    var w = Window()
                    w.player = pw.player; w.fps = f
                    w.t = sec(b.firstStartUnixNanos) + Double(i) * b.windowSeconds
                    w.place = i < b.place.count ? b.place[i] : ""
                    if i < b.memoryGib.count { w.memoryGiB = b.memoryGib[i] }
                    if i < b.mbpsIn.count { w.mbpsIn = b.mbpsIn[i] }
                    if i < b.mbpsOut.count { w.mbpsOut = b.mbpsOut[i] }
                    if i < b.inputP50Ms.count { w.inputMs = b.inputP50Ms[i] }
                    windowsBy[pw.player, default: []].append(w)
                }
                nextStart = b.firstStartUnixNanos + Int64(Double(b.fps.count) * b.windowSeconds * 1e9)
            }
        }
        windows = windowsBy.keys.sorted().flatMap { windowsBy[$0]! }
        for row in r.players {
            let m = row.report
            var p = Player()
            p.id = row.player; p.device = m.device; p.network = m.network; p.place = m.place
            // Over the run itself (windows from before the workload started are the bring-up).
            let fps = (windowsBy[row.player] ?? []).filter { $0.t >= 0 }.map(\.fps).sorted()
            p.meanFPS = fps.isEmpty ? 0 : fps.reduce(0, +) / Double(fps.count)
            p.fpsP5 = PlayerMeter.percentile(fps, 5); p.fpsP95 = PlayerMeter.percentile(fps, 95)
            p.frames = m.frames; p.longestGapMs = m.longestGapMs
            p.inputP50Ms = m.inputLatencyP50Ms; p.inputP99Ms = m.inputLatencyP99Ms; p.frameP99Ms = m.frameP99Ms
            p.memoryGiB = m.memoryGib; p.mbpsIn = m.bandwidthInMbps; p.energyJoules = m.energyJoules; p.battery = m.battery
            p.switches = m.switchesCompleted; p.rolledBack = m.switchesRolledBack; p.fallbacks = m.fallbacks
            p.windows = windowsBy[row.player]?.count ?? 0
            p.switchingAtEnd = m.switching
            p.windowHoles = holes[row.player] ?? 0
            p.firstWindowSeconds = windowsBy[row.player]?.first?.t ?? 0
            p.lastWindowSeconds = windowsBy[row.player]?.last.map { $0.t + 1 } ?? 0
            players.append(p)
        }
        for s in r.switches {
            var x = Switch()
            x.player = s.player; x.from = s.from; x.to = s.to; x.reason = s.reason
            x.t = sec(s.atUnixNanos); x.gapMs = s.gapMs; x.warmupMs = s.warmupMs; x.forced = s.forced; x.rolledBack = s.rolledBack; x.oldFrameMs = s.oldFrameMs
            switches.append(x)
        }
        if r.hasWorld {
            tickHz = r.world.tickHz; tickP50Ms = r.world.tickP50Ms; tickP99Ms = r.world.tickP99Ms
            tickVariabilityMs = r.world.variabilityMs; ticks = r.world.tick; tickOverruns = r.world.overruns; worldPlayers = Int(r.world.players)
        }
    }

    /// Frame gaps at completed, not forced, switches (make-before-break) and at fall-backs.
    public var switchGaps: [Double] { switches.filter { !$0.rolledBack && !$0.forced }.map(\.gapMs) }
    public var fallbackGaps: [Double] { switches.filter(\.forced).map(\.gapMs) }
    /// Make-before-break switches whose gap exceeded the old renderer's frame interval (a 60 Hz
    /// frame at least) by more than 5 ms: the switch itself held frames back.
    public var slowSwitches: Int {
        switches.filter { !$0.rolledBack && !$0.forced && $0.gapMs > max(1000.0 / 60, $0.oldFrameMs ?? 0) + 5 }.count
    }

    /// One player's phases around its first switch from local to a site (the D2.1 Figure 5
    /// comparison): windows from `settle` s after the start to the switch, and from `settle` s
    /// after the switch to the end.
    public struct Phase: Codable, Equatable {
        public var meanFPS = 0.0, rangeFPS = 0.0, memoryGiB = 0.0, mbpsIn = 0.0, inputMs = 0.0, windows = 0
    }
    public func phases(player: String, settle: Double = 5) -> (before: Phase, after: Phase, at: Double)? {
        guard let s = switches.first(where: { $0.player == player && $0.from == "local" && $0.to != "local" && !$0.rolledBack }) else { return nil }
        let ws = windows.filter { $0.player == player }
        func phase(_ xs: [Window]) -> Phase {
            var p = Phase()
            guard !xs.isEmpty else { return p }
            let f = xs.map(\.fps)
            p.windows = xs.count
            p.meanFPS = f.reduce(0, +) / Double(f.count); p.rangeFPS = f.max()! - f.min()!
            p.memoryGiB = xs.map(\.memoryGiB).reduce(0, +) / Double(xs.count)
            p.mbpsIn = xs.map(\.mbpsIn).reduce(0, +) / Double(xs.count)
            let lat = xs.map(\.inputMs).filter { $0 > 0 }
            p.inputMs = lat.isEmpty ? 0 : lat.reduce(0, +) / Double(lat.count)
            return p
        }
        let before = ws.filter { $0.t >= settle && $0.t + 1 <= s.t && $0.place == "local" }
        let after = ws.filter { $0.t >= s.t + settle && $0.place == s.to }
        return (phase(before), phase(after), s.t)
    }

    /// Stream bandwidth out of each render site: the bit rate its players received in each 1 s
    /// window, summed over the players rendering there (by window start, whole seconds), sites
    /// by name, 0 in a second none of its players received from it. Local rendering and windows
    /// without a renderer count for no site.
    public func bandwidthBySite() -> [(site: String, points: [(t: Double, mbps: Double)])] {
        var sums: [String: [Int: Double]] = [:]
        for w in windows where !w.place.isEmpty && w.place != "local" && w.place != "none" {
            sums[w.place, default: [:]][Int(w.t.rounded(.down)), default: 0] += w.mbpsIn
        }
        // Every second of the run for every site: a site streaming to nobody (killed, emptied) is at 0.
        let seconds = windows.map { Int($0.t.rounded(.down)) }
        guard let first = seconds.min(), let last = seconds.max() else { return [] }
        return sums.keys.sorted().map { site in
            (site, (first...last).map { (Double($0), sums[site]![$0] ?? 0) })
        }
    }

    /// Lost-nothing lines for the game: every player accounted for the whole run, every switch
    /// ended (completed or rolled back), no player without frames longer than `maxGapMs`.
    public func lostNothing(maxGapMs: Double) -> (ok: Bool, lines: [String]) {
        guard known else { return (true, []) }
        var ok = true, lines: [String] = []
        let short = players.filter { $0.windows == 0 || $0.firstWindowSeconds > 2 || $0.lastWindowSeconds < runSeconds - 7 || $0.windowHoles > 0 }
        if players.isEmpty { ok = false; lines.append("game: no player reported") }
        else if short.isEmpty { lines.append("game: all \(players.count) players accounted for over the whole run (\(windows.count) one-second FPS windows stored, no holes)") }
        else { ok = false; lines.append("game: players not accounted for the whole run: " + short.map { "\($0.id) (\(String(format: "%.0f–%.0f s", $0.firstWindowSeconds, $0.lastWindowSeconds)), \($0.windowHoles) missing windows)" }.joined(separator: ", ")) }
        let open = players.filter(\.switchingAtEnd)
        let done = switches.filter { !$0.rolledBack }.count, back = switches.filter(\.rolledBack).count
        if open.isEmpty { lines.append("game: every switch ended: \(done) completed (\(switches.filter(\.forced).count) fall-backs), \(back) rolled back") }
        else { ok = false; lines.append("game: switches still under way at the end: " + open.map(\.id).joined(separator: ", ")) }
        let frozen = players.filter { $0.longestGapMs > maxGapMs }
        if frozen.isEmpty { lines.append(String(format: "game: no player went without frames longer than %.0f ms (longest %.0f ms)", maxGapMs, players.map(\.longestGapMs).max() ?? 0)) }
        else { ok = false; lines.append("game: players without frames longer than \(Int(maxGapMs)) ms: " + frozen.map { "\($0.id) (\(Int($0.longestGapMs)) ms)" }.joined(separator: ", ")) }
        return (ok, lines)
    }
}

/// The report's game section and its CSV files.
enum GameSection {
    static let d21 = (fps: 13.0, rangeBefore: 32.0, rangeAfter: 16.0, memBefore: 1.36, memAfter: 1.07, mbpsBefore: 1.05, mbpsAfter: 3.21, rttDelta: -12.56)

    static func writeCSV(_ g: GameAccounting, to dir: String) throws {
        var w = "player,t_s,place,fps,memory_gib,mbps_in,mbps_out,input_p50_ms\n"
        for x in g.windows { w += "\(x.player),\(String(format: "%.1f", x.t)),\(x.place),\(x.fps),\(String(format: "%.3f", x.memoryGiB)),\(String(format: "%.3f", x.mbpsIn)),\(String(format: "%.3f", x.mbpsOut)),\(String(format: "%.1f", x.inputMs))\n" }
        try w.write(toFile: dir + "/game-windows.csv", atomically: true, encoding: .utf8)
        var s = "player,t_s,from,to,gap_ms,old_frame_ms,warmup_ms,forced,rolled_back,reason\n"
        for x in g.switches { s += "\(x.player),\(String(format: "%.2f", x.t)),\(x.from),\(x.to),\(String(format: "%.1f", x.gapMs)),\(String(format: "%.1f", x.oldFrameMs ?? 0)),\(String(format: "%.1f", x.warmupMs)),\(x.forced),\(x.rolledBack),\"\(x.reason.replacingOccurrences(of: "\"", with: "'"))\"\n" }
        try s.write(toFile: dir + "/game-switches.csv", atomically: true, encoding: .utf8)
        var b = "site,t_s,mbps\n"
        for site in g.bandwidthBySite() { for p in site.points { b += "\(site.site),\(String(format: "%.0f", p.t)),\(String(format: "%.3f", p.mbps))\n" } }
        try b.write(toFile: dir + "/game-site-bandwidth.csv", atomically: true, encoding: .utf8)
    }

    static func text(_ g: GameAccounting) -> [String] {
        guard g.known else { return [] }
        var out = ["game (render policy \(g.policy); frame times emulated from device and site GPUs):"]
        out.append(String(format: "  world: %llu ticks at %.0f Hz, tick P50 %.2f ms P99 %.2f ms, variability %.1f ms, %llu overruns", g.ticks, g.tickHz, g.tickP50Ms, g.tickP99Ms, g.tickVariabilityMs, g.tickOverruns))
        for p in g.players {
            out.append(String(format: "  %@ (%@, %@): FPS mean %.1f (P5 %.0f, P95 %.0f), input %.0f ms P50, %.2f GiB, %.2f Mbit/s in, %llu switches, %llu rolled back, %llu fall-backs, longest gap %.0f ms, ends %@",
                              p.id, p.device, p.network, p.meanFPS, p.fpsP5, p.fpsP95, p.inputP50Ms, p.memoryGiB, p.mbpsIn, p.switches, p.rolledBack, p.fallbacks, p.longestGapMs, p.place))
        }
        let gaps = g.switchGaps, fb = g.fallbackGaps
        if !gaps.isEmpty { out.append(String(format: "  frame gap at a switch: P50 %.1f ms, P99 %.1f ms over %d switches; %d longer than the old renderer's frame interval (+5 ms)", PlayerMeter.percentile(gaps, 50), PlayerMeter.percentile(gaps, 99), gaps.count, g.slowSwitches)) }
        if !fb.isEmpty { out.append(String(format: "  fall-back after a render site stopped: gap P50 %.0f ms, max %.0f ms over %d", PlayerMeter.percentile(fb, 50), fb.max()!, fb.count)) }
        for p in g.players { if let ph = g.phases(player: p.id) { out.append(phaseLine(p.id, ph)) } }
        let sites = g.bandwidthBySite()
        if !sites.isEmpty {
            out.append("  stream bandwidth per render site (sum over its players, 1 s windows): " + sites.map { site in
                let v = site.points.map(\.mbps)
                return String(format: "%@ mean %.1f, peak %.1f Mbit/s", site.site, v.reduce(0, +) / Double(v.count), v.max()!)
            }.joined(separator: "; "))
        }
        return out
    }

    static func phaseLine(_ id: String, _ ph: (before: GameAccounting.Phase, after: GameAccounting.Phase, at: Double)) -> String {
        String(format: "  %@ switched to remote at %.0f s: FPS %.1f → %.1f (%+.1f; D2.1 %+.0f), range %.0f → %.0f (D2.1 %.0f → %.0f), memory %.2f → %.2f GiB (D2.1 %.2f → %.2f GB), bandwidth %.2f → %.2f Mbit/s (D2.1 %.2f → %.2f), input-to-frame %.1f → %.1f ms (%+.1f; D2.1 RTT %+.2f ms)",
               id, ph.at, ph.before.meanFPS, ph.after.meanFPS, ph.after.meanFPS - ph.before.meanFPS, d21.fps, ph.before.rangeFPS, ph.after.rangeFPS, d21.rangeBefore, d21.rangeAfter,
               ph.before.memoryGiB, ph.after.memoryGiB, d21.memBefore, d21.memAfter, ph.before.mbpsIn, ph.after.mbpsIn, d21.mbpsBefore, d21.mbpsAfter,
               ph.before.inputMs, ph.after.inputMs, ph.after.inputMs - ph.before.inputMs, d21.rttDelta)
    }

    static func html(_ g: GameAccounting, shaded: [(Double, Double, String)], offset: Double, esc: (String) -> String) -> String {
        guard g.known else { return "" }
        var out = "<h2>Game: players, rendering and switches</h2><p>Render policy <b>\(esc(g.policy))</b>. Local frame times are emulated from each view's scene complexity and the device's GPU (datasheet TFLOPS); remote frames are rendered (emulated) on the site's GPU and streamed as real payloads of the stream's bitrate over the data plane. Labelled emulated.</p>"
        out += String(format: "<p>World server: %llu ticks at %.0f Hz; tick P50 %.2f ms, P99 %.2f ms; variability (Meterstick, Σ|tᵢ−tᵢ₋₁| clamped at the interval) %.1f ms; %llu overruns.</p>", g.ticks, g.tickHz, g.tickP50Ms, g.tickP99Ms, g.tickVariabilityMs, g.tickOverruns)
        // FPS over time per player, switch points as dots, fault windows shaded.
        var fps = SVGPlot(title: "FPS per player", xLabel: "seconds since the trace started", yLabel: "frames per second (1 s windows)")
        for p in g.players {
            let pts = g.windows.filter { $0.player == p.id }.map { ($0.t + offset, $0.fps) }
            if !pts.isEmpty { fps.series.append(SVGPlot.Series(name: p.id, points: pts)) }
        }
        let sw = g.switches.filter { !$0.rolledBack }.map { s -> (Double, Double) in
            let f = g.windows.last { $0.player == s.player && $0.t <= s.t }?.fps ?? 0
            return (s.t + offset, f)
        }
        if !sw.isEmpty { fps.series.append(SVGPlot.Series(name: "switch", points: sw, dots: true)) }
        fps.shaded = shaded
        out += "<h3>FPS over time (switches as dots, faults shaded)</h3>" + fps.render()
        // Deployment per player over time: 0 local, 1 edge, 2 cloud.
        var where_ = SVGPlot(title: "Where each player renders", xLabel: "seconds since the trace started", yLabel: "0 local · 1 edge site · 2 cloud site")
        for p in g.players {
            let pts = g.windows.filter { $0.player == p.id }.map { w -> (Double, Double) in
                (w.t + offset, w.place == "local" ? 0 : w.place.contains("edge") ? 1 : w.place == "none" ? -0.2 : 2)
            }
            if !pts.isEmpty { where_.series.append(SVGPlot.Series(name: p.id, points: pts)) }
        }
        where_.shaded = shaded
        out += "<h3>Deployment per player</h3>" + where_.render()
        var cdf = SVGPlot(title: "FPS CDF", xLabel: "frames per second (1 s windows)", yLabel: "fraction of windows")
        for p in g.players {
            let f = g.windows.filter { $0.player == p.id && $0.t >= 0 }.map(\.fps)
            if !f.isEmpty { cdf.series.append(SVGPlot.Series(name: p.id, points: SVGPlot.cdf(f))) }
        }
        out += "<h3>FPS distribution</h3>" + cdf.render()
        if !g.tickSeries.isEmpty {
            var ticks = SVGPlot(title: "World tick time", xLabel: "tick", yLabel: "ms")
            ticks.series = [SVGPlot.Series(name: "tick ms", points: g.tickSeries.enumerated().map { (Double($0.offset), $0.element) })]
            out += ticks.render()
        }
        let sites = g.bandwidthBySite()
        if !sites.isEmpty {
            var bw = SVGPlot(title: "Stream bandwidth per render site", xLabel: "seconds since the trace started", yLabel: "Mbit/s to its players (sum)")
            bw.series = sites.map { SVGPlot.Series(name: $0.site, points: $0.points.map { ($0.t + offset, $0.mbps) }) }
            bw.shaded = shaded
            out += "<h3>Bandwidth per render site</h3>" + bw.render()
        }
        out += "<table><tr><th>player</th><th>device</th><th>net</th><th>FPS mean</th><th>P5–P95</th><th>input ms P50</th><th>memory GiB</th><th>Mbit/s in</th><th>switches</th><th>rolled back</th><th>fall-backs</th><th>longest gap ms</th><th>ends at</th></tr>"
        for p in g.players {
            out += "<tr><td>\(esc(p.id))</td><td>\(esc(p.device))</td><td>\(esc(p.network))</td>" + String(format: "<td>%.1f</td><td>%.0f–%.0f</td><td>%.0f</td><td>%.2f</td><td>%.2f</td>", p.meanFPS, p.fpsP5, p.fpsP95, p.inputP50Ms, p.memoryGiB, p.mbpsIn)
                + "<td>\(p.switches)</td><td>\(p.rolledBack)</td><td>\(p.fallbacks)</td>" + String(format: "<td>%.0f</td>", p.longestGapMs) + "<td>\(esc(p.place))</td></tr>"
        }
        out += "</table>"
        let gaps = g.switchGaps, fb = g.fallbackGaps
        if !gaps.isEmpty || !fb.isEmpty {
            out += "<p>" + (gaps.isEmpty ? "" : String(format: "Frame gap at a make-before-break switch: P50 %.1f ms, P99 %.1f ms (%d switches; %d longer than the old renderer's own frame interval + 5 ms). ", PlayerMeter.percentile(gaps, 50), PlayerMeter.percentile(gaps, 99), gaps.count, g.slowSwitches))
                + (fb.isEmpty ? "" : String(format: "Fall-back after a render site stopped: gap P50 %.0f ms, max %.0f ms (%d).", PlayerMeter.percentile(fb, 50), fb.max()!, fb.count)) + "</p>"
        }
        let phases = g.players.compactMap { p in g.phases(player: p.id).map { (p.id, $0) } }
        if !phases.isEmpty {
            out += "<h3>Before and after switching to remote rendering, beside D2.1 Figure 5</h3><table><tr><th>player</th><th>switch s</th><th>FPS</th><th>FPS range</th><th>memory GiB</th><th>Mbit/s in</th><th>input-to-frame ms</th></tr>"
            for (id, ph) in phases {
                out += "<tr><td>\(esc(id))</td>" + String(format: "<td>%.0f</td><td>%.1f → %.1f (%+.1f)</td><td>%.0f → %.0f</td><td>%.2f → %.2f</td><td>%.2f → %.2f</td><td>%.1f → %.1f (%+.1f)</td></tr>",
                    ph.at, ph.before.meanFPS, ph.after.meanFPS, ph.after.meanFPS - ph.before.meanFPS, ph.before.rangeFPS, ph.after.rangeFPS, ph.before.memoryGiB, ph.after.memoryGiB,
                    ph.before.mbpsIn, ph.after.mbpsIn, ph.before.inputMs, ph.after.inputMs, ph.after.inputMs - ph.before.inputMs)
            }
            out += String(format: "<tr><td>D2.1</td><td>-</td><td>%+.0f</td><td>%.0f → %.0f</td><td>%.2f → %.2f GB</td><td>%.2f → %.2f</td><td>RTT %+.2f</td></tr></table>", d21.fps, d21.rangeBefore, d21.rangeAfter, d21.memBefore, d21.memAfter, d21.mbpsBefore, d21.mbpsAfter, d21.rttDelta)
        }
        return out
    }
}
