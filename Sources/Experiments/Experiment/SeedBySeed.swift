import Foundation
import Scheduling

/// The twin against the testbed over several request seeds (`strato twin validate-spec --seeds`):
/// each figure seed by seed (the testbed's mean over its runs of that seed against the twin's run
/// of it) and how far apart they are, beside the error of the means the target is judged on. A P99
/// over a few thousand requests rests on its few slowest, so one seed's pair swings with the
/// testbed's own run-to-run spread; the seed-by-seed errors show how much.
public struct SeedBySeed: Sendable {
    public struct Row: Sendable {
        public var seed: UInt64
        public var figure: String
        /// The testbed's runs of this seed (one value each).
        public var testbed: [Double]
        /// The twin's runs of this seed (several when run with timing jitter); `twin` is their mean.
        public var twinRuns: [Double]
        public var twin: Double { twinRuns.isEmpty ? .nan : twinRuns.reduce(0, +) / Double(twinRuns.count) }
        public init(seed: UInt64, figure: String, testbed: [Double], twin: Double) {
            self.init(seed: seed, figure: figure, testbed: testbed, twinRuns: [twin])
        }
        public init(seed: UInt64, figure: String, testbed: [Double], twinRuns: [Double]) {
            self.seed = seed; self.figure = figure; self.testbed = testbed; self.twinRuns = twinRuns
        }
        public var testbedMean: Double { testbed.isEmpty ? .nan : testbed.reduce(0, +) / Double(testbed.count) }
        /// |twin − testbed| / testbed; 0 when both are 0.
        public var error: Double {
            let a = testbedMean
            return a > 0 ? abs(twin - a) / a : (twin == 0 ? 0 : .infinity)
        }
    }

    public var rows: [Row]
    public init(rows: [Row]) { self.rows = rows }

    /// The figures in the order first seen.
    public var figures: [String] {
        var seen: [String] = []
        for r in rows where !seen.contains(r.figure) { seen.append(r.figure) }
        return seen
    }

    /// The smallest, median and largest seed-by-seed error of one figure.
    public func errorSpread(_ figure: String) -> (low: Double, median: Double, high: Double)? {
        let e = rows.filter { $0.figure == figure && $0.error.isFinite }.map(\.error).sorted()
        guard !e.isEmpty else { return nil }
        return (e[0], percentile(e, 50), e[e.count - 1])
    }

    /// How many seeds the twin put on the same side of the testbed for one figure (above, below):
    /// a twin biased one way shows here even when the means agree.
    public func sides(_ figure: String) -> (above: Int, below: Int) {
        let r = rows.filter { $0.figure == figure }
        return (r.filter { $0.twin > $0.testbedMean }.count, r.filter { $0.twin < $0.testbedMean }.count)
    }

    /// The table appended to `validation.txt`: a line per seed and figure, then each figure's spread.
    public var text: String {
        let width = max(28, (rows.map { "  seed \($0.seed) \($0.figure)".count }.max() ?? 0) + 1)
        let twinRuns = rows.contains { $0.twinRuns.count > 1 }
        var t = "\nseed by seed".padding(toLength: width + 1, withPad: " ", startingAt: 0) + "testbed      twin     error   (testbed runs" + (twinRuns ? " | twin runs)\n" : ")\n")
        for r in rows {
            let list = { (v: [Double]) in v.map { String(format: "%.2f", $0) }.joined(separator: ", ") }
            let runs = r.testbed.count > 1 || r.twinRuns.count > 1 ? "   (" + list(r.testbed) + (r.twinRuns.count > 1 ? " | " + list(r.twinRuns) : "") + ")" : ""
            t += "  seed \(r.seed) \(r.figure)".padding(toLength: width, withPad: " ", startingAt: 0)
                + String(format: "%9.2f %9.2f   %6.1f%%", r.testbedMean, r.twin, r.error * 100) + runs + "\n"
        }
        for f in figures {
            guard let s = errorSpread(f) else { continue }
            let side = sides(f)
            t += "  \(f): seed by seed the twin errs by " + String(format: "%.1f–%.1f %% (median %.1f %%)", s.low * 100, s.high * 100, s.median * 100)
                + "; above the testbed on \(side.above) seed(s), below on \(side.below)\n"
        }
        return t
    }
}
