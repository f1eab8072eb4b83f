import Cluster
import Experiments
import Foundation
import Testing
import Yams

// `strato compose generate` / `--on compose`: the compose file of any topology, read back with a
// real YAML parser so that what docker would run is what the local testbed runs.

@Suite("Compose file of a topology")
struct ComposeFileTests {
    static func gameSpec() throws -> ExperimentSpec {
        try ExperimentSpec.parse("""
            name: g
            topology: game-topology.yaml
            workload: {kind: game, game: {players: 5, devices: [phone, laptop], policy: adaptive}}
            duration: 30s
            """, file: "g.yaml", baseDirectory: ExperimentSpecTests.repo + "/experiments")
    }

    /// services → (command, networks, secrets' sources), as compose reads them.
    static func services(_ yaml: String) throws -> [String: (command: [String], networks: [String], secrets: [String])] {
        let root = try #require(try Yams.load(yaml: yaml) as? [String: Any])
        let services = try #require(root["services"] as? [String: Any])
        var out: [String: (command: [String], networks: [String], secrets: [String])] = [:]
        for (name, body) in services {
            let s = try #require(body as? [String: Any])
            let secrets = (s["secrets"] as? [[String: Any]] ?? []).compactMap { $0["source"] as? String }
            out[name] = ((s["command"] as? [String]) ?? [], (s["networks"] as? [String]) ?? [], secrets)
        }
        return out
    }

    @Test("every node is a service running the local testbed's command with the image's paths; players claim their ids")
    func gameTopology() throws {
        let spec = try Self.gameSpec()
        let t = spec.topology
        let yaml = try ComposeFile.render(t, source: "g.yaml", keysDefault: "/keys")
        let services = try Self.services(yaml)
        #expect(Set(services.keys) == Set(["coordinator"] + t.nodes.map(\.id)))
        let layout = ComposeFile.Layout()
        for n in t.nodes {
            let s = try #require(services[n.id])
            #expect(s.command == t.agentArguments(for: n, keysDirectory: "/run/secrets", nvmeRoot: layout.nvmeRoot,
                                                  netControlDirectory: layout.netControlDirectory, container: layout))
            func value(_ flag: String) -> String? { s.command.firstIndex(of: flag).map { s.command[$0 + 1] } }
            #expect(value("--endpoint") == "tcp://coordinator:7700")
            #expect(value("--data-advertise-host") == n.id, "peers reach its data plane by its hostname")
            #expect(value("--data-endpoint") == "tcp://0.0.0.0:7800")
            #expect(!s.command.contains("--client-key") && !s.command.contains("--data"), "no host paths in a container")
            #expect(s.secrets.contains("agent_key_\(n.id)"))
        }
        // Players (device site) reach both render sites and the world; the edge site the world.
        let phones = try #require(services["player-phone"])
        #expect(Set(phones.networks) == ["devices", "edge", "cloud"])
        #expect(Set(try #require(services["render-edge-0"]).networks) == ["edge", "cloud"])
        #expect(yaml.contains("# strato-agent player-phone=player-phone-0,player-phone-1,player-phone-2\n"))
        #expect(yaml.contains("# strato-agent world-0=world-0\n"))
        #expect(yaml.components(separatedBy: "deploy: {endpoint_mode: dnsrr}").count - 1 == t.nodes.count, "in a swarm, names resolve to tasks, not VIPs")
        let coordinator = try #require(services["coordinator"]).command
        #expect(coordinator.contains("--render-policy") && coordinator.contains("adaptive"))
        #expect(coordinator[coordinator.firstIndex(of: "--endpoint")! + 1] == "tcp://0.0.0.0:7700")
        #expect(!coordinator.contains("--data"))
        // Every secret a service mounts is declared, with a file under the key directory.
        let root = try #require(try Yams.load(yaml: yaml) as? [String: Any])
        let declared = try #require(root["secrets"] as? [String: Any])
        for s in services.values.flatMap(\.secrets) { #expect(declared[s] != nil, "secret \(s) is declared") }
        #expect((declared["agent_key_player-phone"] as? [String: Any])?["file"] as? String == "${STRATO_KEYS:-/keys}/agents/player-phone.key")
    }

    @Test("an explicit NVMe path becomes the container's; an open topology mounts no keys")
    func pathsAndOpenSecurity() throws {
        let t = try Topology.parse("""
            name: m
            security: open
            nodes:
              - {id: mem-0, kind: memory, tiers: [dram:1GiB, "nvme:2GiB:/srv/nvme"]}
            """, file: "m.yaml")
        let yaml = try ComposeFile.render(t, source: "m.yaml", keysDefault: "/keys")
        let mem = try #require(try Self.services(yaml)["mem-0"])
        #expect(mem.command.contains("nvme:2147483648:/var/lib/strato/nvme/mem-0"))
        #expect(!mem.command.contains("--keys") && mem.secrets.isEmpty)
        #expect(!yaml.contains("strato-agent") && !yaml.contains("\nsecrets:"))
    }

    @Test("nodes the image cannot run, or whose id is no service name, are refused by name; $ is escaped for compose")
    func refusals() throws {
        let jobs = try Topology.parse("""
            name: j
            nodes:
              - {id: gpu-0, kind: gpu, gpu: {model: A100-80GB, count: 1, job_command: "python3 train.py"}}
            """, file: "j.yaml")
        #expect(throws: ComposeFile.GenerateError.self) { try ComposeFile.render(jobs, source: "j.yaml", keysDefault: "/k") }
        do { _ = try ComposeFile.render(jobs, source: "j.yaml", keysDefault: "/k") } catch { #expect("\(error)".contains("gpu-0") && "\(error)".contains("job_command")) }
        var t = try Topology.parse("name: c\nnodes:\n  - {id: r, kind: render, site: {name: edge-1, kind: edge}}\n", file: "c.yaml")
        t.coordinator.renderScript = ["10 * edge $HOME"]
        let yaml = try ComposeFile.render(t, source: "c.yaml", keysDefault: "/k")
        #expect(yaml.contains("\"10 * edge $$HOME\""), "compose would interpolate a single $")
        t.nodes[0].id = "coordinator"
        #expect(throws: ComposeFile.GenerateError.self) { try ComposeFile.render(t, source: "c.yaml", keysDefault: "/k") }
    }
}
