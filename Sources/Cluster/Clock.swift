import Foundation

/// Time as Stratolab uses it: nanoseconds. `wallNanos` is Unix time (stamped on messages and
/// traces); `monotonicNanos` never jumps and is used for timeouts and failure detection.
///
/// Everything that waits or timestamps takes a `Clock`, so tests drive time by hand and the
/// digital twin runs on virtual time.
public protocol Clock: AnyObject {
    func wallNanos() -> Int64
    func monotonicNanos() -> Int64
}

/// The real clocks of this host.
public final class SystemClock: Clock, @unchecked Sendable {
    public static let shared = SystemClock()
    public init() {}

    public func wallNanos() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    public func monotonicNanos() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}

/// A clock that only moves when told to. Wall time is monotonic time plus a fixed offset, which
/// lets tests model a host whose clock is off.
public final class ManualClock: Clock, @unchecked Sendable {
    private let lock = NSLock()
    private var mono: Int64
    public var wallOffset: Int64

    public init(start: Int64 = 1_000_000_000_000, wallOffset: Int64 = 1_700_000_000_000_000_000) {
        self.mono = start
        self.wallOffset = wallOffset
    }

    public func advance(byMillis ms: Int64) { advance(byNanos: ms * 1_000_000) }

    public func advance(byNanos ns: Int64) {
        lock.lock(); mono += ns; lock.unlock()
    }

    public func monotonicNanos() -> Int64 { lock.lock(); defer { lock.unlock() }; return mono }
    public func wallNanos() -> Int64 { monotonicNanos() + wallOffset }
}

public extension Int64 {
    static func millis(_ ms: Int64) -> Int64 { ms * 1_000_000 }
}
