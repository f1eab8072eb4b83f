import Foundation
import Scheduling

/// How high-priority requests fared against the others: what the policies' headroom for them
/// (Llumnix's, kept free per high-priority request, and the migrations it triggers) buys. Pure:
/// computed from `requests.csv` rows with a `high_priority` column (the testbed's and the twin's).
public struct PriorityClasses: Equatable {
    public struct Class: Equatable {
        public var requests = 0
        public var ttftP50 = 0.0, ttftP99 = 0.0
        /// Each request's mean time between tokens: its P99 (trace s).
        public var tbtP99 = 0.0
        /// Each request's longest gap between tokens (a preemption or a move shows here): its P99.
        public var maxTBTP99 = 0.0
    }
    public var high: Class
    public var normal: Class

    public struct Row: Equatable {
        public var highPriority: Bool
        public var ttft: Double
        public var meanTBT: Double
        public var maxTBT: Double
        public init(highPriority: Bool, ttft: Double, meanTBT: Double, maxTBT: Double) {
            self.highPriority = highPriority; self.ttft = ttft; self.meanTBT = meanTBT; self.maxTBT = maxTBT
        }
    }

    /// Nil when no answered request is high priority (nothing to compare).
    public init?(_ rows: [Row]) {
        let done = rows.filter { $0.ttft >= 0 }
        guard done.contains(where: \.highPriority) else { return nil }
        high = Self.summary(done.filter(\.highPriority))
        normal = Self.summary(done.filter { !$0.highPriority })
    }

    static func summary(_ rows: [Row]) -> Class {
        var c = Class()
        c.requests = rows.count
        guard !rows.isEmpty else { return c }
        let ttft = rows.map(\.ttft).sorted(), tbt = rows.map(\.meanTBT).sorted(), gap = rows.map(\.maxTBT).sorted()
        // The same percentile as every other figure of a run (interpolated between ranks).
        c.ttftP50 = percentile(ttft, 50); c.ttftP99 = percentile(ttft, 99)
        c.tbtP99 = percentile(tbt, 99); c.maxTBTP99 = percentile(gap, 99)
        return c
    }

    /// Rows from a `requests.csv` text, by column name (none without a `high_priority` column).
    public static func rows(csv text: String) -> [Row] {
        let lines = text.split(separator: "\n")
        guard let header = lines.first?.split(separator: ",").map(String.init),
              let h = header.firstIndex(of: "high_priority"), let t = header.firstIndex(of: "ttft_s"),
              let m = header.firstIndex(of: "mean_tbt_s"), let g = header.firstIndex(of: "max_tbt_s") else { return [] }
        return lines.dropFirst().compactMap { line in
            let c = line.split(separator: ",", omittingEmptySubsequences: false)
            guard c.count > max(h, t, m, g), let ttft = Double(c[t]), ttft >= 0 else { return nil }
            return Row(highPriority: c[h] == "yes", ttft: ttft, meanTBT: Double(c[m]) ?? 0, maxTBT: Double(c[g]) ?? 0)
        }
    }

    /// One line: each class's count, TTFT p50 / p99, and P99 of its requests' mean and longest gap
    /// between tokens.
    public var sentence: String {
        func part(_ name: String, _ c: Class) -> String {
            String(format: "%@ %d: TTFT p50 %.2f s, p99 %.2f s; TBT p99 %.0f ms, longest gap p99 %.2f s",
                   name as NSString, c.requests, c.ttftP50, c.ttftP99, c.tbtP99 * 1000, c.maxTBTP99)
        }
        return part("high priority", high) + " | " + part("normal", normal)
    }
}
