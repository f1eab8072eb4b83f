import Protocol

/// One NTP-style exchange: t1 agent send, t2 coordinator receive, t3 coordinator send, t4 agent
/// receive; t1/t4 on the agent's clock, t2/t3 on the coordinator's.
public struct ClockSample: Sendable, Equatable {
    public let t1: Int64, t2: Int64, t3: Int64, t4: Int64

    public init(t1: Int64, t2: Int64, t3: Int64, t4: Int64) {
        self.t1 = t1; self.t2 = t2; self.t3 = t3; self.t4 = t4
    }

    /// Coordinator clock minus agent clock, assuming symmetric paths.
    public var offset: Int64 { ((t2 - t1) + (t3 - t4)) / 2 }
    /// Round-trip time spent on the network (excluding the coordinator's processing).
    public var delay: Int64 { max(0, (t4 - t1) - (t3 - t2)) }
}

/// Estimates an agent's clock offset from the coordinator, NTP's clock-filter way: of the recent
/// samples, trust the one with the smallest round-trip delay, whose error is bounded by half its
/// delay. Old samples fall out of the window, so the estimate stays fresh as clocks drift.
public struct ClockOffsetEstimator: Sendable {
    public let window: Int
    private var samples: [ClockSample] = []
    public private(set) var totalSamples: UInt32 = 0

    public init(window: Int = 8) {
        precondition(window > 0)
        self.window = window
    }

    public mutating func add(_ sample: ClockSample) {
        // A sample whose agent timestamps run backwards is corrupt (e.g. clock stepped); drop it.
        guard sample.t4 >= sample.t1, sample.t3 >= sample.t2 else { return }
        samples.append(sample)
        if samples.count > window { samples.removeFirst(samples.count - window) }
        totalSamples &+= 1
    }

    public mutating func reset() { samples.removeAll() }

    /// The current estimate, or nil before the first sample.
    public var estimate: ClockEstimate? {
        guard let best = samples.min(by: { $0.delay < $1.delay }) else { return nil }
        var e = ClockEstimate()
        e.offsetNanos = best.offset
        e.errorBoundNanos = best.delay / 2
        e.samples = totalSamples
        return e
    }
}
