import Logging

/// What a process's shells and the handlers and controllers they host use instead of
/// process-wide singletons: the clock, the trace recorder and the logger. Two coordinators in one
/// test process, or thousands of virtual nodes, can each have their own; the testbed passes the
/// wall clock, a test a `ManualClock`.
public struct NodeContext: @unchecked Sendable {
    public var clock: Clock
    public var tracer: Tracer
    public var logger: Logger

    public init(clock: Clock = SystemClock.shared, tracer: Tracer = .shared, logger: Logger) {
        self.clock = clock
        self.tracer = tracer
        self.logger = logger
    }
}
