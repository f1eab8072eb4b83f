import ArgumentParser
import Benchmarks
import Foundation

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Benchmarks that print figures.",
                                                    subcommands: [Wire.self, Control.self])

    struct Wire: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Raw libzmq ROUTER/DEALER vs Stratolab's wrapper + envelope, in one run.")
        @Option(help: "Messages per throughput run.") var messages = 200_000
        @Option(help: "Round trips for latency.") var roundTrips = 20_000
        @Option(name: .customLong("telemetry-gpus"), help: "GPU entries in the heartbeat's telemetry (message size).") var telemetryGPUs = 4
        func run() throws {
            let r = try WireBench.run(messages: messages, roundTrips: roundTrips, telemetryGPUs: telemetryGPUs) { print($0); fflush(stdout) }
            print(r.table)
        }
    }

    struct Control: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Virtual agents heartbeating at the default rate against a coordinator process.")
        @Option(help: "Virtual agents.") var agents = 2000
        @Option(help: "Seconds to measure after all agents are registered.") var seconds: Double = 10
        @Option(name: .customLong("heartbeat-ms")) var heartbeatMs = 200
        func run() throws {
            let r = try ControlBench.run(agents: agents, seconds: seconds, heartbeatMs: heartbeatMs) { print($0); fflush(stdout) }
            print(r.table)
        }
    }
}
