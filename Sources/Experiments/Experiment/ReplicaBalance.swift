import Foundation

/// How evenly the replicas of a service kept their first tokens waiting, minute by minute of
/// arrivals: what a migration policy could at best take away. Migration moves requests between
/// replicas; it does not add capacity. When every replica makes the requests that arrive in a
/// minute wait equally long, the wait is the whole cluster's and no move can shorten it; only the
/// difference between the replicas is migration's to remove. Pure: computed from `requests.csv`
/// rows (the testbed's and the twin's have the same columns).
public struct ReplicaBalance: Equatable {
    /// One window of arrivals: each replica's median TTFT over the requests that arrived in it.
    public struct Window: Equatable {
        public var start: Double
        public var medianTTFT: [String: Double]
        public var requests: Int
        /// The slowest replica's median less the quickest's.
        public var spread: Double { (medianTTFT.values.max() ?? 0) - (medianTTFT.values.min() ?? 0) }
        /// The median TTFT over all the window's requests.
        public var clusterMedian: Double
    }

    public struct Row: Equatable {
        public var arrival: Double
        public var replica: String
        public var ttft: Double
        public init(arrival: Double, replica: String, ttft: Double) { self.arrival = arrival; self.replica = replica; self.ttft = ttft }
    }

    public var windowSeconds: Double
    public var windows: [Window]
    /// The windows holding the slowest 1 % of first tokens (each at least one of them).
    public var tailWindows: [Window]

    /// Below this median TTFT (trace seconds) a minute had no queue worth balancing: a prefill
    /// and a step or two.
    public static let queueingSeconds = 1.0

    /// A replica's median counts in a window only from this many requests on (fewer say little).
    public static let minRequestsPerReplica = 5

    public init(_ rows: [Row], windowSeconds: Double = 60) {
        self.windowSeconds = windowSeconds
        var byWindow: [Int: [Row]] = [:]
        for r in rows where r.ttft >= 0 && r.arrival.isFinite && !r.replica.isEmpty { byWindow[Int(r.arrival / windowSeconds), default: []].append(r) }
        windows = byWindow.keys.sorted().compactMap { k -> Window? in
            let rs = byWindow[k]!
            var per: [String: [Double]] = [:]
            for r in rs { per[r.replica, default: []].append(r.ttft) }
            let medians = per.filter { $0.value.count >= Self.minRequestsPerReplica }.mapValues { Self.median($0) }
            // One replica alone has nothing to balance against.
            guard medians.count >= 2 else { return nil }
            return Window(start: Double(k) * windowSeconds, medianTTFT: medians, requests: rs.count, clusterMedian: Self.median(rs.map(\.ttft)))
        }
        let ttfts = rows.map(\.ttft).filter { $0 >= 0 }.sorted()
        guard !ttfts.isEmpty else { tailWindows = []; return }
        let p99 = ttfts[min(ttfts.count - 1, Int(Double(ttfts.count) * 0.99))]
        let tailKeys = Set(rows.filter { $0.ttft >= p99 }.map { Int($0.arrival / windowSeconds) })
        tailWindows = windows.filter { tailKeys.contains(Int($0.start / windowSeconds)) }
    }

    /// The tail window where the replicas were furthest apart: that spread, the median wait over
    /// all replicas in it, and how many tail windows there were; nil when no tail window had two
    /// replicas to compare.
    public var tail: (spread: Double, clusterMedian: Double, windows: Int)? {
        guard let worst = tailWindows.max(by: { $0.spread < $1.spread }) else { return nil }
        return (worst.spread, worst.clusterMedian, tailWindows.count)
    }

    /// A sentence for reports and the twin's output.
    public var sentence: String {
        guard let t = tail else { return "TTFT balance: too few requests per replica and minute to compare the replicas." }
        let share = t.clusterMedian > 0 ? t.spread / t.clusterMedian * 100 : 0
        return String(format: "TTFT balance: in the %d minute(s) of arrivals holding the slowest 1 %% of first tokens, the replicas' median TTFT differed by at most %.2f s, against a median of %.2f s over all replicas in that minute (%.0f %%): ", t.windows, t.spread, t.clusterMedian, share)
            + (t.clusterMedian < Self.queueingSeconds ? "first tokens came without queueing to speak of; there was little for migration to balance."
               : share < 10 ? "the wait was the whole cluster's; moving requests between replicas could at best take away the difference."
                            : "the replicas were unevenly loaded: migration has that difference to take away.")
    }

    /// Rows of a `requests.csv` (arrival_s, replica, ttft_s by the header's names), of one service
    /// or all; rows without a first token are left out.
    public static func rows(csv text: String, service: String? = nil) -> [Row] {
        let lines = text.split(separator: "\n")
        guard let header = lines.first?.split(separator: ",").map(String.init),
              let a = header.firstIndex(of: "arrival_s"), let rep = header.firstIndex(of: "replica"), let t = header.firstIndex(of: "ttft_s"),
              let svc = header.firstIndex(of: "service_id") else { return [] }
        return lines.dropFirst().compactMap { line in
            let c = line.split(separator: ",", omittingEmptySubsequences: false)
            guard c.count > max(a, rep, t, svc), service == nil || c[svc] == service!, let arrival = Double(c[a]), let ttft = Double(c[t]), ttft >= 0 else { return nil }
            return Row(arrival: arrival, replica: String(c[rep]), ttft: ttft)
        }
    }

    /// Each replica's median TTFT per window, as plot series (minutes of arrivals on x); a window
    /// a replica has no median in (drained, dead, not yet started) is a gap (NaN), not bridged.
    public var series: [(name: String, points: [(Double, Double)])] {
        let names = Set(windows.flatMap { $0.medianTTFT.keys }).sorted()
        return names.map { n in
            var points: [(Double, Double)] = []
            var previous: Double?
            for w in windows {
                guard let m = w.medianTTFT[n] else { continue }
                if let p = previous, w.start - p > windowSeconds * 1.5 { points.append(((p + windowSeconds) / 60, .nan)) }
                points.append((w.start / 60, m))
                previous = w.start
            }
            return (n, points)
        }
    }

    static func median(_ v: [Double]) -> Double {
        let s = v.sorted()
        guard !s.isEmpty else { return 0 }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}
