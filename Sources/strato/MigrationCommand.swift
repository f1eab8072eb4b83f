import ArgumentParser
import Cluster
import Features
import Foundation
import Protocol

/// `strato migrations`: the migrations a running testbed's coordinator knows of.
struct MigrationsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrations", abstract: "Live migrations of inference requests: in flight and done (request, from, to, stages, bytes, downtime, outcome).")
    @OptionGroup var address: CoordinatorAddress
    @Flag(name: .customLong("in-flight"), help: "Only migrations still in flight.") var inFlight = false
    @Option(help: "Show at most this many (the newest).") var limit = 50
    @Flag(help: "JSON for scripts.") var json = false

    func run() throws {
        let client = try address.client()
        defer { client.close() }
        let reply = try client.migrations(includeDone: !inFlight, limit: limit)
        if json {
            print(try reply.jsonString())
        } else {
            print(MigrationTable.render(reply))
        }
    }
}

/// `strato request migrate REQ --to NODE`: moves one running request by hand.
struct RequestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "request", abstract: "Act on one inference request.", subcommands: [Migrate.self])

    struct Migrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move a running request, with its KV cache, to a replica of its service on another node.")
        @OptionGroup var address: CoordinatorAddress
        @Argument(help: "Request id.") var request: String
        @Option(help: "Destination node (it must serve a replica of the request's service).") var to: String
        @Option(help: "live, blocking or recompute (default: the coordinator's).") var method = ""
        @Option(help: "Seconds to wait for the outcome (0: do not wait).") var wait: Double = 30

        func run() throws {
            let client = try address.client()
            defer { client.close() }
            let started = try client.migrate(request: request, to: to, method: method)
            print("\(started.migrationID): \(started.requestID) \(started.fromNode)/\(started.fromReplica) → \(started.toNode)/\(started.toReplica) (\(started.method))")
            guard wait > 0 else { return }
            let deadline = Date().addingTimeInterval(wait)
            while Date() < deadline {
                let all = try client.migrations(includeDone: true, limit: 0)
                if let r = all.migrations.first(where: { $0.migrationID == started.migrationID }), r.state != "in-flight", r.state != "orphaned",
                   r.state != "done" || r.downtimeSeconds >= 0 || r.destinationOutcome != "" || Date().addingTimeInterval(wait - 5) > deadline {
                    var shown = all
                    shown.migrations = [r]
                    print(MigrationTable.render(shown))
                    if r.state == "aborted" { throw ExitCode(1) }
                    return
                }
                usleep(100_000)
            }
            print("\(started.migrationID) still in flight after \(Int(wait)) s (see `strato migrations`)")
            throw ExitCode(1)
        }
    }
}
