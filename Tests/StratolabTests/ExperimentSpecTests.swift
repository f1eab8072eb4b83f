import Cluster
import Experiments
import Foundation
import Testing

@Suite("Experiment specs")
struct ExperimentSpecTests {
    static let repo: String = {
        var dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while dir.path != "/" && !FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) { dir.deleteLastPathComponent() }
        return dir.path
    }()

    /// A spec beside the shipped default topology, so `topology:` resolves.
    func parse(_ body: String) throws -> ExperimentSpec {
        try ExperimentSpec.parse(body, file: "test.yaml", baseDirectory: ExperimentSpecTests.repo + "/experiments")
    }

    func failure(_ body: String) -> SpecError? {
        do { _ = try parse(body); return nil } catch let e as SpecError { return e } catch { Issue.record("unexpected \(error)"); return nil }
    }

    static let base = """
        name: t
        topology: default-topology.yaml
        workload: {kind: scheduling, jobs_per_hour: 10, hours: 1}
        duration: 60s

        """

    @Test("a game workload adds the world and one player process per device profile; bad game specs name the field")
    func gameWorkload() throws {
        func game(_ g: String) -> String { "name: g\ntopology: game-topology.yaml\nworkload: {kind: game, game: \(g)}\nduration: 30s\n" }
        let s = try parse(game("{players: 5, devices: [phone, laptop], behaviour: [explore, build], policy: adaptive}"))
        let players = s.topology.nodes.filter { $0.kind == .player }
        #expect(players.map(\.id) == ["player-phone", "player-laptop"])
        #expect(players.map(\.virtual) == [3, 2], "five players spread over two profiles, the first taking the remainder")
        #expect(s.topology.nodes.contains { $0.kind == .world && $0.id == "world-0" })
        #expect(s.topology.coordinator.renderPolicy == "adaptive")
        #expect(s.end == .duration)
        let args = s.topology.agentArguments(for: players[0], keysDirectory: nil, nvmeRoot: "/tmp")
        #expect(Array(args.prefix(2)) == ["client", "player"] && args.contains("--device") && args.contains("explore,build"))
        let mix = try parse(game("{devices: {phone: 2, handheld: 1}, policy: scripted, script: [\"10 * edge\"]}"))
        #expect(mix.topology.nodes.filter { $0.kind == .player }.map(\.virtual) == [2, 1])
        #expect(mix.topology.coordinatorArguments(stateDirectory: "s", keysDirectory: nil).contains("10 * edge"))
        #expect(failure(game("{players: 2, devices: {toaster: 2}}"))?.description.contains("unknown device profile 'toaster'") == true)
        #expect(failure(game("{players: 3, devices: {phone: 2}}"))?.description.contains("devices add up to 2 players, but players is 3") == true)
        #expect(failure(game("{players: 2, behaviour: moonwalk}"))?.description.contains("unknown behaviour 'moonwalk'") == true)
        #expect(failure(game("{players: 2, policy: magic}"))?.description.contains("unknown render policy 'magic'") == true)
        #expect(failure(game("{players: 2, policy: scripted, script: [\"later * edge\"]}"))?.description.contains("AT_SECONDS PLAYER PLACE") == true)
        let noEdge = "name: g\ntopology: default-topology.yaml\nworkload: {kind: game, game: {players: 1, policy: edge}}\nduration: 30s\n"
        #expect(try parse(noEdge).topology.nodes.contains { $0.kind == .world }, "the default topology has an edge render site")
        let noRender = "name: g\ntopology: migration-topology.yaml\nworkload: {kind: game, game: {players: 1, policy: edge}}\nduration: 30s\n"
        #expect(failure(noRender)?.description.contains("render policy edge needs a render node at an edge site") == true)
        #expect(failure("name: g\ntopology: game-topology.yaml\nworkload: {kind: game}\nduration: 30s\n")?.description.contains("a game workload needs 'game:") == true)
        #expect(failure(game("{players: 1}") + "end: jobs_done\n")?.description.contains("runs for its duration") == true)
    }

    @Test("every shipped spec in experiments/ is valid")
    func shippedSpecs() throws {
        let dir = ExperimentSpecTests.repo + "/experiments"
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".yaml") && !$0.contains("topology") }
        #expect(files.count >= 3, "\(files)")
        for f in files {
            let s = try ExperimentSpec.load(file: dir + "/" + f)
            #expect(!s.plan().isEmpty)
        }
        let d = try ExperimentSpec.load(file: dir + "/default.yaml")
        #expect(d.workload.kind == .scheduling && d.end == .jobsDone && !d.faults.isEmpty)
    }

    @Test("a good spec: durations, targets by kind, site and seeded random, defaults")
    func goodSpec() throws {
        let s = try parse(ExperimentSpecTests.base + """
            policy: db-fifo
            time_scale: 2000
            repetitions: 2
            seeds: [7, 8]
            faults:
              - {at: 1500ms, action: kill, target: gpu-v100-0, for: 5s}
              - {at: 2s, action: pause, target: site:edge-1, for: 3s}
              - {at: 10s, action: partition, target: kind:memory, for: 2s}
              - {at: 20s, action: slow, target: random:gpu, for: 10s, cpu: 0.3, latency_ms: 20}
              - {at: 40s, action: crash_coordinator, for: 4s}
            """)
        #expect(s.faults.count == 5)
        #expect(s.faults[0].at == 1.5 && s.faults[0].end == 6.5)
        #expect(s.faults[1].nodes == ["render-edge-0"])
        #expect(s.faults[2].nodes == ["mem-0", "mem-1"])
        #expect(s.faults[3].nodes.count == 1 && s.faults[3].nodes[0].hasPrefix("gpu-"))
        #expect(s.faults[4].nodes.isEmpty)
        #expect(s.seeds == [7, 8] && s.end == .jobsDone)
        #expect(s.topology.coordinator.policy == "db-fifo" && s.topology.coordinator.timeScale == 2000)
        // The random choice is a function of the seed: parsing twice gives the same node.
        let again = try parse(ExperimentSpecTests.base + "seeds: [7, 8]\nfaults:\n  - {at: 20s, action: slow, target: random:gpu, for: 10s, cpu: 0.3}\n")
        let s2 = try parse(ExperimentSpecTests.base + "seeds: [7, 8]\nfaults:\n  - {at: 20s, action: slow, target: random:gpu, for: 10s, cpu: 0.3}\n")
        #expect(again.faults[0].nodes == s2.faults[0].nodes)
    }

    @Test("bad specs name the file, line and field", arguments: [
        ("name: t\ntopology: default-topology.yaml\nwrokload: {kind: idle}\n", 3, "unknown key 'wrokload'"),
        ("name: t\ntopology: default-topology.yaml\nduration: soon\n", 3, "expected a duration"),
        ("name: t\ntopology: default-topology.yaml\nrepetitions: many\n", 3, "expected a whole number"),
        ("name: t\ntopology: nowhere.yaml\n", 2, "does not exist"),
        ("name: t\ntopology: default-topology.yaml\nworkload: {kind: batch}\n", 3, "unknown workload kind 'batch'"),
        ("name: t\ntopology: default-topology.yaml\npolicy: fastest\n", 3, "unknown policy 'fastest'"),
        ("name: t\ntopology: default-topology.yaml\nend: jobs_done\n", 3, "needs a workload with jobs"),
        ("name: t\ntopology: default-topology.yaml\nrepetitions: 3\nseeds: [1, 2]\n", 4, "2 seeds for 3 repetitions"),
        ("name: t\ntopology: default-topology.yaml\noutputs: [trace, movie]\n", 3, "unknown output 'movie'"),
        ("name: t\ntopology: default-topology.yaml\nduration: 30s\nfaults:\n  - {at: 5s, action: kill, target: gpu-h100-9}\n", 5, "unknown node 'gpu-h100-9'"),
        ("name: t\ntopology: default-topology.yaml\nduration: 30s\nfaults:\n  - {at: 5s, action: explode, target: mem-0}\n", 5, "unknown action 'explode'"),
        ("name: t\ntopology: default-topology.yaml\nduration: 30s\nfaults:\n  - {at: 5s, action: fill_disk, target: gpu-t4-0, for: 5s}\n", 5, "fill_disk targets memory hosts with an NVMe tier; gpu-t4-0 is not one"),
        ("name: t\ntopology: default-topology.yaml\nduration: 30s\nfaults:\n  - {at: 45s, action: kill, target: mem-0}\n", 5, "never happens"),
        ("name: t\ntopology: default-topology.yaml\nduration: 30s\nfaults:\n  - {at: 25s, action: kill, target: mem-0, for: 10s}\n", 5, "ends after the run's duration"),
        ("name: t\ntopology: default-topology.yaml\nduration: 30s\nfaults:\n  - {at: -1s, action: kill, target: mem-0}\n", 5, "must not be negative"),
        ("name: t\ntopology: default-topology.yaml\nduration: 30s\nfaults:\n  - {at: 5s, action: kill, target: mem-0, for: 10s}\n  - {at: 8s, action: pause, target: kind:memory, for: 2s}\n", 6, "overlap on mem-0"),
        ("name: t\ntopology: default-topology.yaml\nduration: 30s\nfaults:\n  - {at: 5s, action: slow, target: mem-0, for: 2s}\n", 5, "needs cpu, latency_ms or bandwidth"),
        ("name: t\ntopology: default-topology.yaml\nduration: 30s\nfaults:\n  - {at: 5s, action: slow, target: mem-0, for: 2s, cpu: 1.5}\n", 5, "between 0 and 1"),
        ("name: t\ntopology: default-topology.yaml\nduration: 30s\nfaults:\n  - {at: 5s, action: kill, target: site:mars, for: 2s}\n", 5, "no nodes at site 'mars'"),
        ("name: t\ntopology: default-topology.yaml\nduration: 30s\nfaults:\n  - {at: 5s, action: kill, target: random:tpu, for: 2s}\n", 5, "no nodes of kind 'tpu'"),
        ("name: t\ntopology: default-topology.yaml\nduration: 30s\nfaults:\n  - {at: 5s, action: partition, target: mem-0, for: 2s, bandwidth: 10mbit}\n", 5, "'bandwidth' belongs to slow"),
        ("name: t\ntopology: default-topology.yaml\nduration: 30s\nfaults:\n  - {at: 5s, action: kill}\n", 5, "missing 'target'"),
        ("name: t\ntopology: default-topology.yaml\nfaults: [1, 2\n", 4, "not valid YAML"),
        ("name: t\ntopology: default-topology.yaml\nworkload: {kind: services, services: {rps: 1, gpu: A100-80GB, trace: mooncake, offload: [none, lru]}}\n", 3, "unknown offload policy 'lru'"),
        ("name: t\ntopology: default-topology.yaml\nworkload: {kind: services, services: {rps: 1, gpu: A100-80GB, trace: mooncake, offload: [dram, dram]}}\n", 3, "offload policy 'dram' is listed twice"),
        ("name: t\ntopology: default-topology.yaml\nworkload: {kind: services, services: {rps: 1, gpu: A100-80GB, migration: [none, llumnix], offload: [none, dram]}}\n", 3, "not both"),
        ("name: t\ntopology: default-topology.yaml\nworkload: {kind: services, services: {rps: 1, gpu: A100-80GB, trace: code, model: Llama-9-900b}}\n", 3, "unknown model 'Llama-9-900b'"),
        ("name: t\ntopology: default-topology.yaml\nworkload: {kind: services, services: {rps: 1, gpu: A40, model: Llama-2-70b, weights: cpu}}\n", 3, "weights 'cpu' must be gpu"),
        ("name: t\ntopology: default-topology.yaml\nworkload: {kind: services, services: {rps: 1, gpu: A100-80GB, trace: kimi}}\n", 3, "or mooncake"),
        ("name: t\ntopology: default-topology.yaml\nworkload: {kind: services, services: {rps: 1, gpu: A100-80GB, gpu_memory_utilization: 1.5}}\n", 3, "gpu_memory_utilization 1.5 must be > 0 and ≤ 1"),
        ("name: t\ntopology: migration-topology.yaml\nworkload: {kind: services, services: {rps: 1, gpu: A40, migration: [llumnix], migration_staging: true}}\n", 3, "migration_staging needs a memory host"),
        ("name: t\ntopology: migration-staging-topology.yaml\nworkload: {kind: services, services: {rps: 1, gpu: A40, migration_staging: often}}\n", 3, "true or false"),
    ])
    func badSpecs(_ text: String, _ line: Int, _ message: String) throws {
        let e = failure(text)
        #expect(e != nil, "accepted: \(text)")
        guard let e else { return }
        #expect(e.file == "test.yaml")
        #expect(e.line == line, "\(e)")
        #expect(e.description.contains(message), "\(e)")
    }

    @Test("bandwidth text")
    func bandwidth() throws {
        #expect(ExperimentSpec.bandwidthBytesPerSecond("8mbit") == 1_000_000)
        #expect(ExperimentSpec.bandwidthBytesPerSecond("1gbit") == 125_000_000)
        #expect(ExperimentSpec.bandwidthBytesPerSecond("5MB/s") == 5_000_000)
        #expect(ExperimentSpec.bandwidthBytesPerSecond("fast") == nil)
        // One parser for rates and one for durations, shared with the --net-* options.
        #expect(ExperimentSpec.bandwidthBytesPerSecond("64KiB/s") == 65_536)
        #expect(try NetworkConditions.parseSeconds("1500ms", bareUnitSeconds: 1) == 1.5)
        #expect(try NetworkConditions.parseSeconds("2m", bareUnitSeconds: 1) == 120)
        #expect(try NetworkConditions.parseSeconds("20", bareUnitSeconds: 0.001) == 0.02)
        #expect(throws: NetworkConditions.ParseError.self) { try NetworkConditions.parseSeconds("-3s", bareUnitSeconds: 1) }
        #expect(ExperimentSpec.bandwidthBytesPerSecond("-3mbit") == nil)
    }
}
