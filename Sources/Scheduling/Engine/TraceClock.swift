/// Trace time against wall time: trace seconds = (wall − zero) × time scale. The one conversion
/// the coordinator, the agents' emulations and the request driver use (the twin runs on trace time
/// itself). Pure.
public struct TraceClock: Sendable, Equatable {
    /// Wall time (Unix nanoseconds) of trace second 0.
    public var zeroWall: Int64
    /// Trace seconds per wall second.
    public var timeScale: Double

    public init(zeroWall: Int64, timeScale: Double) { self.zeroWall = zeroWall; self.timeScale = timeScale }

    /// Trace seconds at a wall time.
    public func trace(wall: Int64) -> Double { Double(wall - zeroWall) / 1e9 * timeScale }

    /// Wall time of a trace second.
    public func wall(trace: Double) -> Int64 { zeroWall + Int64(trace / timeScale * 1e9) }

    /// Trace seconds between two wall times.
    public func traceSeconds(fromWall a: Int64, toWall b: Int64) -> Double { Double(b - a) / 1e9 * timeScale }
}
