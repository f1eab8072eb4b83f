import Foundation

/// The D2.1 Figure 5 comparison over repeated runs (several seeds of one game spec): each phase
/// figure before and after a player's first switch to remote rendering, as the mean over the runs
/// with its range, and in how many runs it moved in D2.1's direction. One run's figures say little
/// about a device whose local FPS varies by design; the repetitions say how stable they are.
public enum GamePhasesOverRuns {
    /// One figure over the runs: its value before and after the switch in each run.
    public struct Figure: Equatable {
        public var name: String
        public var unit: String
        public var before: [Double]
        public var after: [Double]
        /// D2.1's direction: +1 the figure rises at the switch, −1 it falls, 0 it should stay
        /// comparable (latency).
        public var direction: Int
        public var d21: String
        public var deltas: [Double] { zip(before, after).map { $1 - $0 } }
        /// Runs whose change has D2.1's sign (for direction 0: within ±25 % of the value before).
        public var agreeing: Int {
            zip(before, after).filter { b, a in
                switch direction {
                case 1: return a > b
                case -1: return a < b
                default: return abs(a - b) <= 0.25 * max(abs(b), 1e-9)
                }
            }.count
        }
    }

    public struct PlayerPhases: Equatable {
        public var player: String
        public var switchAt: [Double]
        public var figures: [Figure]
    }

    /// Per player with a local → remote switch in at least one run; a run where the player never
    /// switched is left out of that player's figures (and counted in `missing`).
    public static func collect(_ runs: [ExperimentSummary]) -> (players: [PlayerPhases], runs: Int, missing: [String: Int]) {
        let games = runs.compactMap(\.game).filter(\.known)
        var byPlayer: [String: [(before: GameAccounting.Phase, after: GameAccounting.Phase, at: Double)]] = [:]
        var order: [String] = []
        var missing: [String: Int] = [:]
        for g in games {
            for p in g.players {
                if !order.contains(p.id) { order.append(p.id) }
                if let ph = g.phases(player: p.id) { byPlayer[p.id, default: []].append(ph) } else { missing[p.id, default: 0] += 1 }
            }
        }
        let d = GameSection.d21
        let players = order.compactMap { id -> PlayerPhases? in
            guard let phs = byPlayer[id], !phs.isEmpty else { return nil }
            func fig(_ name: String, _ unit: String, _ f: (GameAccounting.Phase) -> Double, _ dir: Int, _ d21: String) -> Figure {
                Figure(name: name, unit: unit, before: phs.map { f($0.before) }, after: phs.map { f($0.after) }, direction: dir, d21: d21)
            }
            return PlayerPhases(player: id, switchAt: phs.map(\.at), figures: [
                fig("FPS", "", \.meanFPS, 1, String(format: "%+.0f", d.fps)),
                fig("FPS range", "", \.rangeFPS, -1, String(format: "%.0f → %.0f", d.rangeBefore, d.rangeAfter)),
                fig("device memory", "GiB", \.memoryGiB, -1, String(format: "%.2f → %.2f GB", d.memBefore, d.memAfter)),
                fig("bandwidth in", "Mbit/s", \.mbpsIn, 1, String(format: "%.2f → %.2f Mbps", d.mbpsBefore, d.mbpsAfter)),
                fig("input-to-frame", "ms", \.inputMs, 0, String(format: "RTT %+.2f ms", d.rttDelta)),
            ])
        }
        return (players, games.count, missing)
    }

    static func mean(_ xs: [Double]) -> Double { xs.isEmpty ? 0 : xs.reduce(0, +) / Double(xs.count) }

    static func decimals(_ f: Figure) -> Int { f.unit == "GiB" || f.unit == "Mbit/s" ? 2 : f.name == "FPS range" ? 0 : 1 }

    static func number(_ x: Double, _ f: Figure, sign: Bool = false) -> String {
        String(format: "%\(sign ? "+" : "").\(decimals(f))f", x)
    }

    /// "31.3 → 59.9 (+28.6; +26.1 … +30.2)": means before → after, then the change's mean and range.
    static func cell(_ f: Figure) -> String {
        let d = f.deltas
        var s = number(mean(f.before), f) + " → " + number(mean(f.after), f) + (f.unit.isEmpty ? "" : " " + f.unit)
        s += " (" + number(mean(d), f, sign: true)
        if d.count > 1 { s += "; " + number(d.min()!, f, sign: true) + " … " + number(d.max()!, f, sign: true) }
        return s + ")"
    }

    static func direction(_ f: Figure) -> String {
        "\(f.agreeing)/\(f.before.count) " + (f.direction == 0 ? "within ±25 %" : f.direction > 0 ? "rose" : "fell")
    }

    /// Lines for the end of a run, or nil when fewer than two runs had a game with a switch.
    public static func text(_ runs: [ExperimentSummary]) -> String? {
        let c = collect(runs)
        guard c.runs > 1, !c.players.isEmpty else { return nil }
        var out = ["D2.1 Figure 5 over \(c.runs) runs (seeds \(runs.map { "\($0.seed)" }.joined(separator: ", "))): mean before → after (mean change; its range over the runs), and in how many runs D2.1's direction held:"]
        for p in c.players {
            let at = p.switchAt.map { String(format: "%.0f", $0) }.joined(separator: ", ")
            out.append("  \(p.player) (switched at \(at) s\(c.missing[p.player].map { "; no switch in \($0) run(s)" } ?? "")):")
            for f in p.figures {
                out.append("    " + f.name.padding(toLength: 15, withPad: " ", startingAt: 0) + cell(f).padding(toLength: 44, withPad: " ", startingAt: 0)
                           + direction(f).padding(toLength: 18, withPad: " ", startingAt: 0) + "D2.1 " + f.d21)
            }
        }
        return out.joined(separator: "\n")
    }

    /// `phases.csv` (one row per run, player and figure) and `report.html` with the table and a link
    /// to each run's own report; nothing when `text` has nothing.
    public static func write(_ runs: [ExperimentSummary], runDirectories: [String], to dir: String, title: String) throws {
        let c = collect(runs)
        guard c.runs > 1, !c.players.isEmpty else { return }
        var csv = "player,figure,unit,run,before,after,d21\n"
        for p in c.players {
            for f in p.figures {
                for (i, (b, a)) in zip(f.before, f.after).enumerated() {
                    csv += "\(p.player),\(f.name),\(f.unit),\(i + 1),\(b),\(a),\"\(f.d21)\"\n"
                }
            }
        }
        try csv.write(toFile: dir + "/phases.csv", atomically: true, encoding: .utf8)
        func esc(_ s: String) -> String { s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;") }
        var h = "<!doctype html><html><head><meta charset=utf-8><title>\(esc(title)): D2.1 Figure 5 over \(c.runs) runs</title>"
        h += "<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}</style></head><body>"
        h += "<h1>\(esc(title)): D2.1 Figure 5 over \(c.runs) runs</h1>"
        h += "<p>Each figure is the mean over the runs before and after the player's first switch to remote rendering (windows from 5 s after the start to the switch, and from 5 s after it to the end), the mean change with its range over the runs, and in how many runs it moved in D2.1's direction. Frame times are emulated from the device's and the site's GPUs.</p>"
        for p in c.players {
            h += "<h2>\(esc(p.player))</h2><p>Switched at " + p.switchAt.map { String(format: "%.0f s", $0) }.joined(separator: ", ") + (c.missing[p.player].map { "; no switch in \($0) run(s)" } ?? "") + ".</p>"
            h += "<table><tr><th>figure</th><th>ours: before → after (change; range)</th><th>runs in D2.1's direction</th><th>D2.1</th><th>per run (before → after)</th></tr>"
            for f in p.figures {
                let per = zip(f.before, f.after).map { number($0, f) + " → " + number($1, f) }.joined(separator: "; ")
                h += "<tr><td>\(esc(f.name))</td><td>\(esc(cell(f)))</td><td>\(esc(direction(f)))</td><td>\(esc(f.d21))</td><td>\(esc(per))</td></tr>"
            }
            h += "</table>"
        }
        h += "<h2>Runs</h2><ul>"
        for (s, d) in zip(runs, runDirectories) {
            let rel = d.hasPrefix(dir + "/") ? String(d.dropFirst(dir.count + 1)) : d
            h += "<li><a href=\"\(esc(rel))/report.html\">seed \(s.seed)</a>\(s.lostNothing.ok ? "" : " (lost-nothing check FAILED)")</li>"
        }
        h += "</ul></body></html>"
        try h.write(toFile: dir + "/report.html", atomically: true, encoding: .utf8)
    }
}
