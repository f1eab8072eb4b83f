import ArgumentParser
import Cluster
import Features
import Foundation
import Protocol

/// `strato tiers`: the memory hosts' block stores on a running testbed.
struct TiersCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tiers", abstract: "Memory hosts' tiers (DRAM, CXL, NVMe): capacity, use, hit ratio, evictions, bandwidth.")
    @OptionGroup var address: CoordinatorAddress
    @Option(help: "Only this memory host.") var node = ""
    @Flag(help: "JSON for scripts.") var json = false

    func run() throws {
        let client = try address.client()
        defer { client.close() }
        let reply = try client.tiers(node: node)
        print(json ? try reply.jsonString() : TiersTable.render(reply))
    }
}
