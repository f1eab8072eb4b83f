import ArgumentParser
import Cluster
import Experiments
import Foundation
import Protocol

/// Where to reach the coordinator: explicit options, else the running testbed's record.
struct CoordinatorAddress: ParsableArguments {
    @Option(help: "Coordinator endpoint (default: the running testbed's, else tcp://127.0.0.1:7700).") var endpoint: String?
    @Option(help: "Key directory (default: the running testbed's).") var keys: String?
    @Option(name: .customLong("run-dir"), help: "Testbed run directory.") var runDir = Testbed.defaultRunDirectory
    @Option(name: .customLong("client-key"), help: "Key pair file to connect with instead of KEYS/operator.key (e.g. KEYS/driver.key: submit and read only).") var clientKey: String?

    func client() throws -> OperatorClient {
        let bed = Testbed.load(runDirectory: runDir)
        return try OperatorClient(endpoint: endpoint ?? bed?.endpoint ?? "tcp://127.0.0.1:7700",
                                  keysDirectory: keys ?? (endpoint == nil ? bed?.keysDirectory : nil), keyFile: clientKey)
    }
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show every node: kind, site, state, incarnation, resources, heartbeat age, clock offset.")

    @OptionGroup var address: CoordinatorAddress
    @Flag(help: "Print JSON for scripts.") var json = false
    @Option(help: "Refresh every SECONDS (Ctrl-C to stop).") var watch: Double?
    @Option(help: "With --watch, stop after this many refreshes.") var count: Int?

    func run() throws {
        let client = try address.client()
        defer { client.close() }
        var shown = 0
        while true {
            let s: StatusReply
            do { s = try client.status() } catch { throw UserFacingError("\(error)") }
            if json {
                print(StatusFormatter.json(s))
            } else {
                if watch != nil && isatty(1) != 0 { print("\u{1B}[2J\u{1B}[H", terminator: "") }
                print(StatusFormatter.table(s))
            }
            shown += 1
            guard let w = watch, count.map({ shown < $0 }) ?? true else { return }
            fflush(stdout)
            usleep(useconds_t(w * 1e6))
            if !json { print("") }
        }
    }
}

struct NodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Send a command to a node (delivered at least once, executed once).",
        subcommands: [Label.self, Drain.self, Ping.self])

    static func send(_ address: CoordinatorAddress, node: String, _ command: Command) throws {
        let client = try address.client()
        defer { client.close() }
        do {
            let r = try client.command(node: node, command)
            print("command \(r.commandID) to \(node): \(r.detail)")
        } catch { throw UserFacingError("\(error)") }
    }

    struct Label: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set labels KEY=VALUE on a node (KEY= removes).")
        @OptionGroup var address: CoordinatorAddress
        @Argument var node: String
        @Argument(help: "KEY=VALUE pairs.") var labels: [String]

        func run() throws {
            var s = Stratolab_V1_SetLabels()
            for l in labels {
                let p = l.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                guard p.count == 2, !p[0].isEmpty else { throw ValidationError("'\(l)' must be KEY=VALUE") }
                s.labels[p[0]] = p[1]
            }
            var c = Command(); c.setLabels = s
            try NodeCommand.send(address, node: node, c)
        }
    }

    struct Drain: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop placing new work on a node (--undo to resume).")
        @OptionGroup var address: CoordinatorAddress
        @Argument var node: String
        @Flag var undo = false
        func run() throws {
            var d = Stratolab_V1_Drain(); d.drain = !undo
            var c = Command(); c.drain = d
            try NodeCommand.send(address, node: node, c)
        }
    }

    struct Ping: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Ping a node through the command path.")
        @OptionGroup var address: CoordinatorAddress
        @Argument var node: String
        func run() throws {
            var p = Stratolab_V1_Ping(); p.note = "from \(ProcessStats.hostName)"
            var c = Command(); c.ping = p
            try NodeCommand.send(address, node: node, c)
        }
    }
}
