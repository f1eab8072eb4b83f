import Cluster
import Experiments
import Foundation
import Scheduling
import Testing

// Topology files: the `network:` section (emulated link conditions per site) and the agent
// arguments it turns into.

private let nodesYAML = """
    nodes:
      - {id: edge-r, kind: render, site: {name: edge-1, kind: edge}}
      - {id: cloud-r, kind: render, site: {name: cloud-1, kind: cloud}}
    """

private func parse(_ network: String) throws -> Topology {
    try Topology.parse("name: t\n" + network + "\n" + nodesYAML, file: "t.yaml")
}

/// The error `parse` throws, or nil.
private func failure(_ network: String) -> SpecError? {
    do { _ = try parse(network); return nil } catch let e as SpecError { return e } catch { return nil }
}

@Suite("Topology network section")
struct TopologyTests {
    @Test("conditions per site are read, in any unit the user types")
    func good() throws {
        let t = try parse("""
            network:
              edge-1: {latency_ms: 20, jitter_ms: 5, loss: 0.001, bandwidth: 100mbit}
              cloud-1:
                latency_ms: 1.5s
                loss: 2%
                bandwidth: 10MB/s
            """)
        #expect(t.network["edge-1"] == NetworkConditions(delayMs: 20, jitterMs: 5, loss: 0.001, bandwidthBytesPerSecond: 12_500_000))
        #expect(t.network["cloud-1"] == NetworkConditions(delayMs: 1500, loss: 0.02, bandwidthBytesPerSecond: 10_000_000))
    }

    @Test("no network section: no conditions, and agents get no --net-* flags")
    func absent() throws {
        let t = try parse("")
        #expect(t.network.isEmpty)
        for n in t.nodes {
            #expect(!t.agentArguments(for: n, keysDirectory: nil, nvmeRoot: "/nvme").contains { $0.hasPrefix("--net-") })
        }
    }

    @Test("a node's agent gets its site's conditions as --net-* flags, and its control file")
    func arguments() throws {
        let t = try parse("network:\n  edge-1: {latency_ms: 20, jitter_ms: 5, loss: 0.001, bandwidth: 100mbit}")
        let edge = try #require(t.nodes.first { $0.id == "edge-r" })
        let cloud = try #require(t.nodes.first { $0.id == "cloud-r" })
        let args = t.agentArguments(for: edge, keysDirectory: nil, nvmeRoot: "/nvme", netControlDirectory: "/run/net")
        func value(_ flag: String, in a: [String]) -> String? { a.firstIndex(of: flag).map { a[$0 + 1] } }
        #expect(value("--net-delay-ms", in: args) == "20")
        #expect(value("--net-jitter-ms", in: args) == "5")
        #expect(value("--net-loss", in: args) == "0.001")
        #expect(value("--net-control", in: args) == "/run/net/edge-r.json")
        // The flags read back to the same conditions.
        let back = NetworkConditions(delayMs: try NetworkConditions.parseDuration(value("--net-delay-ms", in: args)!),
                                     jitterMs: try NetworkConditions.parseDuration(value("--net-jitter-ms", in: args)!),
                                     loss: try NetworkConditions.parseLoss(value("--net-loss", in: args)!),
                                     bandwidthBytesPerSecond: try NetworkConditions.parseBandwidth(value("--net-bandwidth", in: args)!))
        #expect(back == t.network["edge-1"])
        let cloudArgs = t.agentArguments(for: cloud, keysDirectory: nil, nvmeRoot: "/nvme", netControlDirectory: "/run/net")
        #expect(!cloudArgs.contains { $0.hasPrefix("--net-") && $0 != "--net-control" })
        #expect(value("--net-control", in: cloudArgs) == "/run/net/cloud-r.json")
        // Callers that give no control directory get no --net-control.
        #expect(!t.agentArguments(for: edge, keysDirectory: nil, nvmeRoot: "/nvme").contains("--net-control"))
    }

    @Test("a site no node is at is refused, naming the line")
    func unknownSite() throws {
        let e = try #require(failure("network:\n  edge-1: {latency_ms: 5}\n  edge-9: {latency_ms: 20}"))
        #expect(e.file == "t.yaml" && e.line == 4)
        #expect(e.message.contains("unknown site 'edge-9'") && e.message.contains("cloud-1, edge-1"))
        #expect(e.description.hasPrefix("t.yaml:4: network.edge-9:"))
    }

    @Test("bad values are refused with the file, line, field and the value", arguments: [
        ("{bandwidth: 100 furlongs}", "network.edge-1.bandwidth", "'100 furlongs'"),
        ("{bandwidth: 100mbps}", "network.edge-1.bandwidth", "ambiguous"),
        ("{loss: 1.5}", "network.edge-1.loss", "'1.5' must be between 0 and 1"),
        ("{loss: 150%}", "network.edge-1.loss", "'150%'"),
        ("{latency_ms: -3}", "network.edge-1.latency_ms", "must not be negative"),
        ("{jitter_ms: soon}", "network.edge-1.jitter_ms", "'soon'"),
        ("{latency: 20}", "network.edge-1", "unknown key 'latency'"),
    ])
    func bad(conditions: String, field: String, says: String) throws {
        let e = try #require(failure("network:\n  edge-1: \(conditions)"))
        #expect(e.line == 3, "\(e)")
        #expect(e.field.hasPrefix(field), "\(e)")
        #expect(e.message.contains(says), "\(e)")
    }

    @Test("the network section must be a mapping of sites")
    func notAMapping() throws {
        let e = try #require(failure("network: [edge-1]"))
        #expect(e.line == 2 && e.message.contains("expected a mapping"))
    }

    @Test("the shipped default topology emulates a modest edge link")
    func defaultTopology() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let t = try Topology.load(file: root.appendingPathComponent("experiments/default-topology.yaml").path)
        let edge = try #require(t.network["edge-1"])
        #expect(edge.delayMs > 0 && edge.delayMs + edge.jitterMs <= 50, "stays well below the failure detector's timeouts")
        #expect(edge.bandwidthBytesPerSecond != nil && !edge.partitioned && edge.loss == 0)
        #expect(t.network.keys.allSatisfy { site in t.nodes.contains { $0.siteName == site } })
    }

    @Test("the coordinator's offload policy and tier link reach its arguments; bad ones are refused by name")
    func offloadKeys() throws {
        let t = try parse("coordinator: {offload_policy: tiered, tier_link: 25gbit}")
        let a = t.coordinatorArguments(stateDirectory: "/s", keysDirectory: nil)
        #expect(a.firstIndex(of: "--offload-policy").map { a[$0 + 1] } == "tiered")
        #expect(a.firstIndex(of: "--tier-link").map { a[$0 + 1] } == "25gbit")
        #expect(try #require(failure("coordinator: {offload_policy: everything}")).message.contains("unknown offload policy 'everything'"))
        #expect(try #require(failure("coordinator: {tier_link: fast}")).message.contains("tier_link"))
        // Without the keys the coordinator's defaults hold.
        #expect(!(try parse("")).coordinatorArguments(stateDirectory: "/s", keysDirectory: nil).contains("--offload-policy"))
    }
}
