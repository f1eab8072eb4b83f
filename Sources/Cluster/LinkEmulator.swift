import Scheduling

/// One direction of an emulated link: pure logic, no sockets and no clock reads (time comes in as
/// monotonic nanoseconds), randomness from a seeded generator (Scheduling's `SplitMix64`).
///
/// A message of N bytes offered at time t is dropped when the link is partitioned or, with
/// probability `loss`, lost. Otherwise it is serialised onto the link behind the messages before it
/// (a rate queue: with a bandwidth of B bytes/s it occupies the link for N/B seconds, starting when
/// the previous message has gone out), then takes `delay + jitter` to arrive, jitter uniform in
/// [-jitter, +jitter]. It is never released before it was offered, nor before the message offered
/// before it: like TCP, the link does not reorder. Changed conditions apply to messages offered
/// afterwards; those already queued keep their release times.
public struct LinkEmulator<Payload> {
    public struct Stats: Equatable, Sendable {
        public var offered: UInt64 = 0
        /// Lost to `loss` or to a partition.
        public var dropped: UInt64 = 0
        public var droppedByPartition: UInt64 = 0
        /// Queued to be released later than offered.
        public var delayed: UInt64 = 0
        public var delivered: UInt64 = 0
        public var bytesOffered: UInt64 = 0
        public var bytesDropped: UInt64 = 0
        public var bytesDelivered: UInt64 = 0
        public init() {}
    }

    public enum Decision: Equatable, Sendable {
        case dropped
        case queued(releaseAt: Int64)
    }

    private struct Entry {
        let releaseAt: Int64
        let bytes: Int
        let payload: Payload
    }

    public private(set) var conditions: NetworkConditions
    public private(set) var stats = Stats()
    private var random: SplitMix64
    private let uniform: (() -> Double)?
    private var queue: [Entry] = []
    private var head = 0
    /// When the link finishes sending what it was given (the rate queue's tail).
    private var linkFreeAt = Int64.min
    /// Release time of the last queued message (FIFO floor).
    private var lastRelease = Int64.min

    public init(conditions: NetworkConditions = .none, seed: UInt64 = 0x5EED_11AC) {
        self.conditions = conditions
        self.random = SplitMix64(seed: seed)
        self.uniform = nil
    }

    /// With a source of uniform numbers in [0, 1) of the caller's (e.g. to script the jitter).
    public init(conditions: NetworkConditions, uniform: @escaping () -> Double) {
        self.conditions = conditions
        self.random = SplitMix64(seed: 0)
        self.uniform = uniform
    }

    /// Applies to messages offered from now on.
    public mutating func setConditions(_ c: NetworkConditions) { conditions = c }

    public var pendingCount: Int { queue.count - head }
    public var isEmpty: Bool { head == queue.count }

    /// When the next queued message is due, or nil when none is queued.
    public var nextDue: Int64? { head < queue.count ? queue[head].releaseAt : nil }

    @discardableResult
    public mutating func offer(_ payload: Payload, bytes: Int, at now: Int64) -> Decision {
        let size = UInt64(max(0, bytes))
        stats.offered += 1
        stats.bytesOffered += size
        let c = conditions
        if c.partitioned || (c.loss > 0 && draw() < c.loss) {
            stats.dropped += 1
            stats.bytesDropped += size
            if c.partitioned { stats.droppedByPartition += 1 }
            return .dropped
        }
        var sentAt = now
        if let rate = c.bandwidthBytesPerSecond {
            let start = max(now, linkFreeAt)
            sentAt = start + Int64((Double(size) / rate * 1e9).rounded())
            linkFreeAt = sentAt
        }
        var release = sentAt + Int64((c.delayMs * 1e6).rounded())
        if c.jitterMs > 0 {
            release += Int64(((draw() * 2 - 1) * c.jitterMs * 1e6).rounded())
        }
        release = max(release, now, lastRelease)
        lastRelease = release
        if release > now { stats.delayed += 1 }
        queue.append(Entry(releaseAt: release, bytes: Int(size), payload: payload))
        return .queued(releaseAt: release)
    }

    /// Hands over, in order, every queued message due at `now`.
    public mutating func releaseDue(at now: Int64, _ body: (Payload) throws -> Void) rethrows {
        while head < queue.count && queue[head].releaseAt <= now {
            let e = queue[head]
            head += 1
            stats.delivered += 1
            stats.bytesDelivered += UInt64(e.bytes)
            try body(e.payload)
        }
        if head == queue.count {
            queue.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024 && head * 2 >= queue.count {
            queue.removeFirst(head)
            head = 0
        }
    }

    /// The messages due at `now`, in order.
    public mutating func due(at now: Int64) -> [Payload] {
        var out: [Payload] = []
        releaseDue(at: now) { out.append($0) }
        return out
    }

    private mutating func draw() -> Double {
        if let u = uniform { return u() }
        return random.uniform()
    }
}
