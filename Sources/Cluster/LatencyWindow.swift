import Scheduling

/// The most recent latency samples (a ring), with percentiles on demand.
public struct LatencyWindow: Sendable {
    private var samples: [Int64]
    private var next = 0
    private var filled = 0
    public private(set) var total: UInt64 = 0

    public init(capacity: Int = 65_536) {
        samples = [Int64](repeating: 0, count: capacity)
    }

    public mutating func record(_ nanos: Int64) {
        samples[next] = nanos
        next = (next + 1) % samples.count
        filled = min(filled + 1, samples.count)
        total &+= 1
    }

    public var count: Int { filled }

    /// Percentile (p in 0...100) in nanoseconds, by the project's one definition (Scheduling's
    /// `percentile`, linear between ranks); 0 with no samples.
    public func percentile(_ p: Double) -> Int64 {
        guard filled > 0 else { return 0 }
        return Int64(Scheduling.percentile(samples[0..<filled].sorted().map(Double.init), p).rounded())
    }
}

/// Events per second over a sliding window of one-second buckets.
public struct RateMeter: Sendable {
    private var buckets: [Int64: UInt64] = [:]
    public let windowSeconds: Int64

    public init(windowSeconds: Int64 = 5) { self.windowSeconds = windowSeconds }

    public mutating func add(_ n: UInt64 = 1, at monoNanos: Int64) {
        let second = monoNanos / 1_000_000_000
        buckets[second, default: 0] += n
        if buckets.count > Int(windowSeconds) + 2 {
            buckets = buckets.filter { $0.key > second - windowSeconds - 1 }
        }
    }

    /// Rate over the last full `windowSeconds` seconds before `monoNanos`.
    public func rate(at monoNanos: Int64) -> Double {
        let current = monoNanos / 1_000_000_000
        let total = buckets.filter { $0.key < current && $0.key >= current - windowSeconds }.values.reduce(0, +)
        return Double(total) / Double(windowSeconds)
    }
}
