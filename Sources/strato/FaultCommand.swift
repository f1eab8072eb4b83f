import ArgumentParser
import Cluster
import Experiments
import Foundation

/// Live fault injection into a running local testbed (`strato testbed up` or `strato experiment
/// run`): each start and heal is recorded as a trace event in the testbed's spool folder, so the
/// experiment's merged trace shows it as a window.
struct FaultCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fault", abstract: "Inject faults into a running testbed, and heal them.",
        subcommands: [Inject.self, Heal.self, List.self])

    static func activePath(_ runDir: String) -> String { runDir + "/faults-active.json" }

    static func loadActive(_ runDir: String) -> [FaultInjector.Active] {
        guard let d = FileManager.default.contents(atPath: activePath(runDir)) else { return [] }
        let dec = JSONDecoder(); dec.dateDecodingStrategy = .iso8601
        return (try? dec.decode([FaultInjector.Active].self, from: d)) ?? []
    }

    static func saveActive(_ list: [FaultInjector.Active], _ runDir: String) throws {
        let enc = JSONEncoder(); enc.dateEncodingStrategy = .iso8601; enc.outputFormatting = [.prettyPrinted]
        try enc.encode(list).write(to: URL(fileURLWithPath: activePath(runDir)))
    }

    static func open(_ runDir: String) throws -> (Testbed, Topology, FaultInjector) {
        guard let bed = Testbed.load(runDirectory: runDir), !bed.liveProcesses.isEmpty else {
            throw UserFacingError("no running testbed in \(runDir) (start one with `strato testbed up` or `strato experiment run`)")
        }
        // The testbed's topology: its file, or the experiment spec that holds it inline.
        let topo: Topology
        do { topo = try Topology.load(file: bed.topologyFile) } catch {
            guard let spec = try? ExperimentSpec.load(file: bed.topologyFile) else { throw UserFacingError("\(error)") }
            topo = spec.topology
        }
        try Tracer.shared.enable(process: "operator-fault", spoolDirectory: runDir + "/trace")
        return (bed, topo, FaultInjector(backend: LocalFaultBackend(testbed: bed, topology: topo),
                                         operatorClient: try? OperatorClient(endpoint: bed.endpoint, keysDirectory: bed.keysDirectory, name: "operator-fault")))
    }

    struct Inject: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a fault: kill, pause, partition, slow, drain, fill_disk or crash_coordinator. With --for it heals itself after that long; without, `strato fault heal` ends it.")
        @Argument(help: "kill, pause, partition, slow, drain, fill_disk or crash_coordinator.") var action: String
        @Argument(help: "A node id, kind:K, site:S, random or random:K (none for crash_coordinator).") var target: String?
        @Option(name: .customLong("for"), help: "Seconds until the heal (blocks until then).") var duration: Double?
        @Option(help: "slow: the share of one CPU the process keeps (0–1; needs --for).") var cpu: Double?
        @Option(name: .customLong("latency-ms"), help: "slow: added latency on the node's link.") var latencyMs: Double?
        @Option(help: "slow: bandwidth cap, e.g. 10mbit.") var bandwidth: String?
        @Option(help: "Seed for random targets.") var seed: UInt64 = UInt64(Date().timeIntervalSince1970)
        @Option(name: .customLong("run-dir")) var runDir = Testbed.defaultRunDirectory

        func run() throws {
            guard let a = ExperimentSpec.FaultAction(rawValue: action) else {
                throw ValidationError("unknown action '\(action)'; expected \(ExperimentSpec.FaultAction.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if let d = duration, d <= 0 { throw ValidationError("--for must be > 0 seconds") }
            if let c = cpu, !(c > 0 && c < 1) { throw ValidationError("--cpu \(c) must be between 0 and 1") }
            if cpu != nil && duration == nil { throw ValidationError("--cpu throttling runs in this process: give --for SECONDS") }
            if let b = bandwidth, ExperimentSpec.bandwidthBytesPerSecond(b) == nil { throw ValidationError("--bandwidth '\(b)' is not a rate like 10mbit or 5MB/s") }
            if a == .slow && cpu == nil && latencyMs == nil && bandwidth == nil { throw ValidationError("slow needs --cpu, --latency-ms or --bandwidth") }
            if a != .slow && (cpu != nil || latencyMs != nil || bandwidth != nil) { throw ValidationError("--cpu, --latency-ms and --bandwidth belong to slow") }
            let (_, topo, injector) = try FaultCommand.open(runDir)
            defer { Tracer.shared.disable() }
            var f = ExperimentSpec.Fault(at: 0, duration: duration, action: a, target: target ?? "coordinator", nodes: [],
                                         cpu: cpu, latencyMs: latencyMs, bandwidth: bandwidth, line: 0)
            if a != .crashCoordinator {
                guard let t = target else { throw ValidationError("\(action) needs a TARGET (node id, kind:K, site:S, random or random:K)") }
                do { f.nodes = try ExperimentSpec.resolveTarget(t, in: topo, seed: seed) } catch { throw UserFacingError("\(error)") }
            }
            let id = try injector.start(f, id: "live-\(UUID().uuidString.prefix(6).lowercased())")
            print("started \(id): \(f.describe)")
            if let d = duration {
                Thread.sleep(forTimeInterval: d)
                try injector.stop(id)
                print("\(a.healName): \(f.describe) after \(String(format: "%g", d)) s")
            } else {
                try FaultCommand.saveActive(FaultCommand.loadActive(runDir) + injector.active, runDir)
                print("heal it with `strato fault heal \(id)` (or `strato fault heal --all`)")
            }
        }
    }

    struct Heal: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End faults started with `strato fault inject` (no --for).")
        @Argument(help: "Fault ids (see `strato fault list`).") var ids: [String] = []
        @Flag(help: "Heal every open fault.") var all = false
        @Option(name: .customLong("run-dir")) var runDir = Testbed.defaultRunDirectory

        func run() throws {
            guard all || !ids.isEmpty else { throw ValidationError("name fault ids or give --all") }
            let open = FaultCommand.loadActive(runDir)
            let chosen = all ? open : open.filter { ids.contains($0.id) }
            for id in ids where !open.contains(where: { $0.id == id }) { print("no open fault '\(id)'") }
            guard !chosen.isEmpty else { print("nothing to heal"); return }
            let (_, _, injector) = try FaultCommand.open(runDir)
            defer { Tracer.shared.disable() }
            for a in chosen { injector.adopt(a) }
            let errors = injector.healAll()
            for a in chosen { print("\(a.fault.action.healName): \(a.fault.describe) (\(a.id))") }
            for e in errors { print("error: \(e)") }
            try FaultCommand.saveActive(open.filter { o in !chosen.contains { $0.id == o.id } }, runDir)
            if !errors.isEmpty { throw ExitCode(1) }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Open faults started with `strato fault inject`.")
        @Option(name: .customLong("run-dir")) var runDir = Testbed.defaultRunDirectory
        func run() throws {
            let open = FaultCommand.loadActive(runDir)
            if open.isEmpty { print("no open faults") }
            for a in open { print("\(a.id)  since \(ISO8601DateFormatter().string(from: a.startedAt))  \(a.fault.describe)") }
        }
    }
}
