import Dispatch
import Foundation
import Logging
import ServiceLifecycle

/// A shell's blocking loop (the coordinator's, an agent session's) as a service of the process's
/// group. The loop runs on a thread of its own, which owns its ZeroMQ sockets; a graceful shutdown
/// (SIGTERM or SIGINT, or the group ending) or a cancellation asks it to stop, and the loop then
/// flushes its state and traces before it returns.
struct LoopService: Service, CustomStringConvertible {
    let description: String
    let body: @Sendable () throws -> Void
    let requestStop: @Sendable () -> Void

    func run() async throws {
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, Error>) in
                    let thread = Thread {
                        do { try body(); done.resume() } catch { done.resume(throwing: error) }
                    }
                    thread.name = description
                    thread.stackSize = 8 << 20
                    thread.start()
                }
            } onGracefulShutdown: { requestStop() }
        } onCancel: { requestStop() }
    }
}

/// The process lifecycle: its services in one group (swift-service-lifecycle) that shuts down
/// gracefully on SIGTERM and SIGINT, in reverse order of the list, and ends when any of them ends.
enum Lifecycle {
    static func run(_ services: [Service], logger: Logger) throws {
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: services.map { .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        // The command's `run` is synchronous: the group runs on the concurrency pool while this
        // thread waits for it.
        final class Outcome: @unchecked Sendable { var error: Error? }
        let outcome = Outcome()
        let finished = DispatchSemaphore(value: 0)
        Task {
            do { try await group.run() } catch { outcome.error = error }
            finished.signal()
        }
        finished.wait()
        if let e = outcome.error { throw e }
    }
}
