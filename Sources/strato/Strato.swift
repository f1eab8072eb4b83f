import ArgumentParser
import Foundation
import Logging

@main
struct Strato: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "strato",
        abstract: "Stratolab: a multi-process testbed for experiments on next-generation cloud infrastructure.",
        subcommands: [
            CoordinatorCommand.self, AgentCommand.self, StatusCommand.self, NodeCommand.self,
            TestbedCommand.self, KeysCommand.self, BenchCommand.self, KBCommand.self, TwinCommand.self, SubmitCommand.self, JobsCommand.self, ServicesCommand.self,
            ExperimentCommand.self, FaultCommand.self, TraceCommand.self, ReportCommand.self, DataPlaneCommand.self,
            MigrationsCommand.self, RequestCommand.self, TiersCommand.self, GameCommandGroup.self, ClientCommand.self, ComposeCommand.self,
        ])

    static func bootstrapLogging() {
        let level = ProcessInfo.processInfo.environment["STRATO_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
    }
}

/// Runs `onSignal` once on SIGTERM or SIGINT (on a background queue), so a process can stop its
/// loops, flush state and exit cleanly.
enum SignalTrap {
    nonisolated(unsafe) static var sources: [DispatchSourceSignal] = []

    static func onTerminate(_ onSignal: @escaping @Sendable () -> Void) {
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler(handler: onSignal)
            source.resume()
            sources.append(source)
        }
    }
}

extension SignalTrap {
    /// Runs `onSignal` on every SIGHUP (the conventional "reload your configuration").
    static func onHangUp(_ onSignal: @escaping @Sendable () -> Void) {
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        source.setEventHandler(handler: onSignal)
        source.resume()
        sources.append(source)
    }
}

/// Reports a failure on stderr in the form users read: what failed, and why.
struct UserFacingError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
