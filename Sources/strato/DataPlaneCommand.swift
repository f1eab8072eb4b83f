import ArgumentParser
import Cluster
import Features
import Foundation
import Protocol

struct DataPlaneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dataplane", abstract: "The agents' data plane: probe the bulk throughput between two nodes, list probes.",
        subcommands: [Probe.self, Probes.self])

    struct Probe: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send real bytes from one node's data plane to another's (agent to agent, through the emulated network); the receiver verifies every byte.")
        @OptionGroup var address: CoordinatorAddress
        @Argument(help: "Sending node.") var from: String
        @Argument(help: "Receiving node.") var to: String
        @Option(help: "MiB to send.") var mib: Double = 64
        @Option(name: .customLong("chunk-kib"), help: "Chunk size in KiB (default: the data plane's, 1 MiB).") var chunkKiB: Int = 0
        @Option(help: "Seconds to wait for the result.") var timeout: Double = 120

        func validate() throws {
            guard mib > 0 && mib <= 1_048_576 else { throw ValidationError("--mib \(mib) must be between 0 and 1048576") }
            guard chunkKiB >= 0 && chunkKiB <= 16 << 10 else { throw ValidationError("--chunk-kib \(chunkKiB) must be between 1 and 16384 (0: default)") }
        }

        func run() throws {
            let client = try address.client()
            defer { client.close() }
            let r = try client.runProbe(from: from, to: to, bytes: UInt64(mib * 1_048_576), chunkBytes: UInt32(chunkKiB * 1024), timeoutSeconds: timeout)
            print(DataPlaneCommand.table([r]))
            if !r.ok { throw ExitCode(1) }
        }
    }

    struct Probes: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Probes the coordinator knows of, with their results.")
        @OptionGroup var address: CoordinatorAddress
        func run() throws {
            let client = try address.client()
            defer { client.close() }
            var req = ProbeRequest(); req.status = ProbeStatus()
            let r = try client.probe(req)
            print(DataPlaneCommand.table(r.results))
            if !r.pending.isEmpty { print("pending: \(r.pending.joined(separator: ", "))") }
        }
    }

    static func table(_ results: [ProbeResult]) -> String {
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
        var s = pad("PROBE", 14) + pad("FROM", 16) + pad("TO", 16) + pad("RESULT", 8) + pad("MIB", 10) + pad("SECONDS", 10) + "THROUGHPUT\n"
        for r in results {
            s += pad(r.probeID, 14) + pad(r.fromNode, 16) + pad(r.toNode, 16) + pad(r.ok ? "ok" : "failed", 8)
            s += pad(String(format: "%.1f", Double(r.bytes) / 1_048_576), 10) + pad(String(format: "%.3f", r.seconds), 10)
            s += (r.ok ? String(format: "%.1f MB/s", r.bytesPerSecond / 1e6) : r.error) + "\n"
        }
        return s + "bytes are real, sent agent to agent through the sender's and the receiver's emulated links, and verified by the receiver"
    }
}
