import ArgumentParser
import Cluster
import Experiments
import Features
import Foundation
import Scheduling
import Twin

struct TwinCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "twin", abstract: "The digital twin: the coordinator's policies on a virtual clock with modelled GPU agents.",
        subcommands: [Run.self, Validate.self, ValidateSpec.self])

    struct WorkloadOptions: ParsableArguments {
        @Option(help: "Seed data folder (default: data/ of the repository).") var data: String?
        @Option(help: "Cluster as MODEL:TOTAL/PER_NODE,… (default: the D2.1-style 24×T4, 16×A100-80GB, 24×V100).") var cluster: String?
        @Option(help: "Take the GPU nodes of a topology file instead of --cluster.") var topology: String?
        @Option(help: "Generated traces: this many, seeds 1…N.") var traces = 1
        @Option(name: .customLong("first-seed"), help: "Seed of the first generated trace.") var firstSeed: UInt64 = 1
        @Option(name: .customLong("jobs-per-hour"), help: "Generated arrival rate.") var jobsPerHour = 40.0
        @Option(help: "Generated trace length in hours.") var hours = 24.0
        @Option(name: .customLong("gavel-trace"), help: "Replay a Gavel job trace instead of generated ones.") var gavelTrace: String?
        @Option(name: .customLong("max-jobs"), help: "Read at most this many jobs from a Gavel trace.") var maxJobs: Int?
        @Option(name: .customLong("services-rps"), help: "Add the two Azure-shaped inference services at this mean request rate each (0: none).") var servicesRPS = 0.0
        @Option(name: .customLong("services-gpu"), help: "GPU model the services run on.") var servicesGPU = "A100-80GB"

        func nodes() throws -> [NodeSlot] {
            if let topology { return ClusterSpec.nodes(of: try Topology.load(file: topology)) }
            return try ClusterSpec.parse(cluster ?? ClusterSpec.d21)
        }

        func build() throws -> (nodes: [NodeSlot], kb: KnowledgeBase, workloads: [Workload], notes: [String]) {
            let nodes = try nodes()
            guard !nodes.isEmpty else { throw ValidationError("the cluster has no GPU nodes") }
            let dataDir = DataPaths.dataDirectory(data)
            let models = Array(Set(nodes.map(\.gpuModel))).sorted()
            let (kb, imported, estimated) = KnowledgeSeeding.seeded(dataDirectory: dataDir, gpuModels: models)
            guard !imported.rows.isEmpty else { throw ValidationError("no knowledge could be read from \(dataDir): \(imported.skipped.first?.description ?? "")") }
            let notes = ["knowledge base: \(imported.rows.count) measured rows from \(imported.files.count) files, \(estimated) estimated; \(imported.skipped.count) skipped"]
            var services: [ServiceSpec] = []
            if servicesRPS > 0 {
                services = try ServiceSetup.azureServices(dataDirectory: dataDir, seconds: hours * 3600, gpuModel: servicesGPU, meanRPS: servicesRPS)
            }
            var workloads: [Workload] = []
            if let gavelTrace {
                var w = try GavelTraceReader.read(file: gavelTrace, kb: kb, limit: maxJobs)
                w.services = services
                workloads.append(w)
            } else {
                var g = TraceGenerator()
                g.jobsPerHour = jobsPerHour
                g.hours = hours
                var maxPer: [String: Int] = [:]
                for n in nodes { maxPer[n.gpuModel] = max(maxPer[n.gpuModel] ?? 0, n.gpuCount) }
                for i in 0..<UInt64(max(traces, 1)) {
                    var w = try g.generate(seed: firstSeed + i, kb: kb, maxGPUsPerNode: maxPer)
                    w.services = services
                    workloads.append(w)
                }
            }
            return (nodes, kb, workloads, notes)
        }
    }

    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Replay traces through the policies on the twin; write results and a report.")
        @OptionGroup var workload: WorkloadOptions
        @Option(help: "Policies: all, or a comma-separated list of \(Policies.names.joined(separator: ", ")).") var policy = "all"
        @Option(help: "Results folder.") var out: String?
        @Option(name: .customLong("fail"), help: "Kill a node during the run: NODE@HOURS+DOWN_HOURS (repeatable).") var failures: [String] = []
        @Flag(name: .customLong("per-request"), help: "Serve the services' requests one by one on modelled replicas (as the testbed does) instead of as a fluid.") var perRequest = false

        func run() throws {
            let policies = try TwinCommand.policies(policy)
            let (nodes, kb, workloads, notes) = try workload.build()
            var options = TwinOptions()
            options.failures = try failures.map { try TwinCommand.parseFailure($0, nodes: nodes) }
            let gpus = nodes.map(\.gpuCount).reduce(0, +)
            print("twin: \(nodes.count) nodes, \(gpus) GPUs (\(Dictionary(grouping: nodes, by: \.gpuModel).map { "\($0.value.map(\.gpuCount).reduce(0, +))×\($0.key)" }.sorted().joined(separator: ", "))); \(workloads.count) trace(s) × \(policies.count) policies — emulated GPUs")
            var results = SchedulingResults()
            results.notes = notes + ["Engine: digital twin (discrete-event, trace time). GPUs emulated from published measurements."]
            let total = workloads.count * policies.count
            var done = 0
            for w in workloads {
                if !w.skipped.isEmpty { print("  \(w.name): skipped \(w.skipped.count) rows, e.g. \(w.skipped[0])") }
                var o = options
                if perRequest { o.requests = RequestStream.generate(w.services, until: workload.hours * 3600, seed: 1) }
                for p in policies {
                    let r = DigitalTwin(nodes: nodes, workload: w, kb: kb, options: o).run(policy: p)
                    done += 1
                    let s = r.summary
                    print(String(format: "  [%d/%d] %@ on %@: %d/%d jobs, mean JCT %.2f h, p99 %.2f h, makespan %.1f h, %d events in %.2f s",
                                 done, total, p.name.padding(toLength: 13, withPad: " ", startingAt: 0), w.name, s.finished, s.jobs, s.meanJCT / 3600, s.p99JCT / 3600, s.makespan / 3600, r.events, r.wallSeconds))
                    results.runs.append(r)
                }
            }
            print("")
            print(results.table())
            if let out {
                try results.write(to: out, title: "Stratolab twin: \(policies.map(\.name).joined(separator: ", ")) on \(workloads.count) trace(s)")
                print("\nresults in \(out)/ (summary.csv, summary.json, jobs.csv, jct_cdf.svg, report.html)")
            }
        }
    }

    static func policies(_ s: String) throws -> [SchedulingPolicy] {
        if s == "all" { return Policies.all }
        return try s.split(separator: ",").map {
            guard let p = Policies.named(String($0)) else { throw ValidationError("unknown policy '\($0)' (known: \(Policies.names.joined(separator: ", ")))") }
            return p
        }
    }

    static func parseFailure(_ s: String, nodes: [NodeSlot]) throws -> NodeFailure {
        let a = s.split(separator: "@").map(String.init)
        guard a.count == 2, let b = Optional(a[1].split(separator: "+").map { Double($0) }), b.count == 2, let at = b[0], let down = b[1], at >= 0, down > 0 else {
            throw ValidationError("--fail '\(s)': expected NODE@HOURS+DOWN_HOURS, e.g. v100-000@2+1")
        }
        guard nodes.contains(where: { $0.id == a[0] }) else { throw ValidationError("--fail '\(s)': unknown node '\(a[0])' (e.g. \(nodes.first?.id ?? ""))") }
        return NodeFailure(node: a[0], at: at * 3600, downFor: down * 3600)
    }
}

extension TwinCommand {
    struct Validate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run one trace on the local testbed and in the twin; report the twin's error in mean and p99 JCT and makespan.")
        @Option(help: "Topology of the testbed (its GPU nodes are the twin's cluster).") var topology = "experiments/default-topology.yaml"
        @Option(help: "Policy.") var policy = "hybrid"
        @Option(name: .customLong("time-scale"), help: "Trace seconds per wall second on the testbed.") var timeScale = 1000.0
        @Option(help: "Trace length in hours.") var hours = 4.0
        @Option(name: .customLong("jobs-per-hour"), help: "Arrival rate.") var jobsPerHour = 20.0
        @Option(help: "Trace seed.") var seed: UInt64 = 1
        @Option(name: .customLong("kill"), help: "Kill this GPU node's agent at 30 % of the trace (restarting its jobs elsewhere).") var kill: String?
        @Option(help: "Results folder.") var out = "results/twin-validate"
        @Option(help: "Seed data folder.") var data: String?
        @Option(name: .customLong("services-rps"), help: "Also drive the two Azure-shaped inference services at this mean request rate each (0: none); compares SLO attainment and p99 latency.") var servicesRPS = 0.0
        @Option(name: .customLong("services-gpu"), help: "GPU model the services run on.") var servicesGPU = "A100-80GB"

        func run() throws {
            guard let p = Policies.named(policy) else { throw ValidationError("unknown policy '\(policy)'") }
            var topo = try Topology.load(file: topology)
            topo.coordinator.policy = p.name
            topo.coordinator.timeScale = timeScale
            let nodes = ClusterSpec.nodes(of: topo)
            guard !nodes.isEmpty else { throw ValidationError("\(topology) has no GPU nodes") }
            if let kill, !nodes.contains(where: { $0.id == kill }) { throw ValidationError("--kill: no GPU node '\(kill)' in \(topology)") }
            let dataDir = DataPaths.dataDirectory(data)
            let (kb, _, _) = KnowledgeSeeding.seeded(dataDirectory: dataDir, gpuModels: Array(Set(nodes.map(\.gpuModel))))
            var maxPer: [String: Int] = [:]
            for n in nodes { maxPer[n.gpuModel] = max(maxPer[n.gpuModel] ?? 0, n.gpuCount) }
            var g = TraceGenerator(); g.hours = hours; g.jobsPerHour = jobsPerHour
            var workload = try g.generate(seed: seed, kb: kb, maxGPUsPerNode: maxPer)
            var services: [ServiceSpec] = []
            if servicesRPS > 0 {
                guard nodes.contains(where: { $0.gpuModel == GPUCatalog.model(named: servicesGPU)?.name }) else {
                    throw ValidationError("--services-gpu \(servicesGPU): no GPU node of that model in \(topology)")
                }
                services = try ServiceSetup.azureServices(dataDirectory: dataDir, seconds: hours * 3600, gpuModel: servicesGPU, meanRPS: servicesRPS)
                workload.services = services
            }
            let requests = RequestStream.generate(services, until: hours * 3600, seed: seed)
            print("validate: \(workload.jobs.count) jobs over \(hours) h, policy \(p.name), time scale \(Int(timeScale))× on \(nodes.count) GPU nodes (emulated GPUs)")

            let runDir = ".strato/validate"
            if let old = Testbed.load(runDirectory: runDir) { old.down() }
            try? FileManager.default.removeItem(atPath: runDir)
            let start = Date()
            let bed = try Testbed.up(topology: topo, runDirectory: runDir) { print("  \($0)") }
            defer { bed.down() }
            _ = try bed.waitUntilAlive(timeoutSeconds: 60)
            let client = try OperatorClient(endpoint: bed.endpoint, keysDirectory: bed.keysDirectory)
            defer { client.close() }
            var run = SchedulingTestbedRun(client: client, workload: workload)
            run.services = services
            run.requests = requests
            // The kill happens when the run sees the trace clock pass 30 %; the twin gets the trace
            // time it really happened, and the failure detector's delay before the coordinator
            // acts (dead_after_ms of silence, counted from the last heartbeat: ~half an interval earlier).
            final class KillTime: @unchecked Sendable { var at: Double? }
            let killTime = KillTime()
            if let kill, let proc = bed.processes.first(where: { $0.name == kill }) {
                run.faults = [(hours * 3600 * 0.3, "kill \(kill) (SIGKILL)", { t in killTime.at = t; _ = Glibc.kill(proc.pid, SIGKILL) })]
            }
            run.timeoutSeconds = max(600, hours * 3600 / timeScale * 20)
            let (reply, requestsReply, notes) = try run.run { print($0) }
            var testbed = SchedulingTestbedRun.result(reply, workload: workload, nodes: nodes, wallSeconds: Date().timeIntervalSince(start), notes: notes)
            testbed.services = SchedulingTestbedRun.serviceOutcomes(requestsReply)
            var options = TwinOptions()
            options.requests = requests
            if let kill, let at = killTime.at {
                let detect = (Double(topo.coordinator.deadAfterMs) - Double(topo.coordinator.heartbeatMs) / 2) / 1000 * timeScale
                options.failures = [NodeFailure(node: kill, at: at, downFor: 1e9, detectedAfter: detect)]
            }
            // The testbed's agents report a finish as it happens and the coordinator decides on its
            // next loop turn (≤ 20 ms): about 10 ms of wall time each way, in trace time.
            options.reportLatency = 0.010 * timeScale
            options.startLatency = 0.010 * timeScale
            // A routed request reaches the agent's engine about 1.4 ms after its arrival (median of
            // received − arrival over 28,840 requests of experiments/services.yaml on this box).
            options.serveLatency = 0.0014 * timeScale
            // Agents measure and report with every heartbeat.
            options.reportInterval = Double(topo.coordinator.heartbeatMs) / 1000 * timeScale
            let twin = DigitalTwin(nodes: nodes, workload: workload, kb: kb, options: options).run(policy: p)
            let v = ValidationReport(testbed: testbed, twin: twin)
            var results = SchedulingResults()
            results.runs = [testbed, twin]
            results.notes = ["Validation: the same trace and policy on the testbed (\(Int(timeScale))× time scale, real processes) and in the twin."]
            let tableRows = [("mean JCT (h)", v.testbed.meanJCT, v.twin.meanJCT, v.meanJCTError), ("p99 JCT (h)", v.testbed.p99JCT, v.twin.p99JCT, v.p99JCTError),
                             ("makespan (h)", v.testbed.makespan, v.twin.makespan, v.makespanError)]
            var text = "figure          testbed     twin    error\n"
            for (name, a, b, e) in tableRows { text += name.padding(toLength: 14, withPad: " ", startingAt: 0) + String(format: "%9.3f %9.3f   %5.2f%%\n", a / 3600, b / 3600, e * 100) }
            text += String(format: "finished        %d/%d   %d/%d", v.testbed.finished, v.testbed.jobs, v.twin.finished, v.twin.jobs)
            for a in testbed.services {
                guard let b = twin.services.first(where: { $0.id == a.id }) else { continue }
                text += "\n" + a.id + String(format: ": SLO attainment %.2f%% vs %.2f%% (%.2f points apart), p99 latency %.2f s vs %.2f s, p99 TTFT %.3f s vs %.3f s",
                                               a.attainment * 100, b.attainment * 100, abs(a.attainment - b.attainment) * 100, a.latencyP99 ?? .nan, b.latencyP99 ?? .nan,
                                               a.ttftP99 ?? .nan, b.ttftP99 ?? .nan)
            }
            print("\n" + text)
            print(v.worst <= 0.05 ? "twin error ≤ 5 %: target met" : String(format: "twin error %.1f %% > 5 %%: target NOT met", v.worst * 100))
            try results.write(to: out, title: "Twin validation: \(p.name), \(workload.jobs.count) jobs", extraHTML: "<h2>Twin vs testbed</h2><pre>\(text)</pre>")
            let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            try enc.encode(v).write(to: URL(fileURLWithPath: out + "/validation.json"))
            print("results in \(out)/")
        }
    }
}

extension TwinCommand {
    /// The twin against an experiment spec with inference services: the spec runs on the local
    /// testbed for one migration policy, then the twin replays the same requests, faults and
    /// policy; their P99 TTFT and migration counts are compared (target: within 10 %).
    struct ValidateSpec: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "validate-spec",
            abstract: "Run an experiment spec on the local testbed and in the twin and compare: inference services (one migration policy; P99 TTFT, migrations, latency) or a game (mean FPS, switches).")
        @Argument(help: "Experiment spec with workload.services (e.g. experiments/migration.yaml) or workload.game (experiments/game.yaml).") var spec: String
        @Option(help: "Migration policy to run (default: the spec's first).") var migration: String?
        @Option(help: "Offload policy to run, for a spec that compares offload policies (default: its first).") var offload: String?
        @Option(help: "Results folder.") var out = "results/twin-validate-spec"
        @Option(help: "Seed data folder.") var data: String?
        @Option(name: .customLong("run-dir"), help: "Run directory of the local testbed.") var runDir = ".strato/validate"
        @Flag(name: .customLong("twin-only"), help: "Run the twin alone (no testbed run, nothing compared): a quick look at a policy.") var twinOnly = false

        @Option(name: .customLong("queue-at"), help: "Service specs with --twin-only: where requests wait for a replica: 'router' (the coordinator holds them and sends a replica at most twice its batch, as the testbed does) or 'replicas' (each goes to a replica on arrival and waits in its engine's queue, as behind Llumnix's dispatcher; twin only).") var queueAt = "router"
        @Option(help: "Game specs with --twin-only: scale the players to this many (the device mix kept).") var players: Int?
        @Option(help: "Run the testbed this many times and compare the twin with the means (game specs: the twin with as many seeds). Service specs: the same requests each time; a testbed's migrations are few and their count varies from run to run with its timing.") var repetitions = 1
        @Option(help: "Service specs: validate over these request seeds, as 1,2,3 or 1-6 (default: the spec's first). Each seed's requests run on the testbed (--repetitions times) and in the twin; the figures are compared on their means over the seeds, and seed by seed: one run's P99 rests on its few slowest requests.") var seeds: String?
        @Option(name: .customLong("twin-runs"), help: "Service specs: run the twin this many times per seed: the first as modelled, each further one with the control plane's latencies (hand-over, results, starts, migration decisions) scaled by 0.9–1.1 as the testbed's timing varies (a restarted agent's registration too), and the policy rounds' phase drawn anywhere in their interval. The twin's figures are then means over its runs, and its own spread is shown: the few moves made at the policy's thresholds follow that timing.") var twinRuns = 1
        @Flag(name: .customLong("log-rounds"), help: "Service specs: write each migration policy round as the twin's policy saw it to twin/rounds.log (each instance's blocks, queue head, running and high-priority requests, freeness, and the decisions), in the line the testbed's coordinator logs at STRATO_LOG_LEVEL=debug.") var logRounds = false
        @Option(name: .customLong("against"), help: "Service specs: compare with testbed runs already made instead of running the testbed: a results folder of this spec (one run, or several from --repetitions or a policy comparison); repeatable. Its runs of the policy validated are taken, with their seeds (or those of --seeds).") var against: [String] = []

        func run() throws {
            setvbuf(stdout, nil, _IOLBF, 0)   // the testbed runs' progress appears as it happens, also through a pipe
            var s = try ExperimentSpec.load(file: spec)
            if s.workload.kind == .game { try TwinGame.validate(s, out: out, runDir: runDir, twinOnly: twinOnly, players: players, repetitions: repetitions); return }
            guard var sv = s.workload.services else { throw ValidationError("\(spec) has no workload.services or workload.game to validate") }
            let policy = migration ?? sv.migration.first ?? s.topology.coordinator.migrationPolicy
            guard MigrationPolicies.named(policy) != nil else { throw ValidationError("--migration '\(policy)' is unknown (known: \(MigrationPolicies.names.joined(separator: ", ")))") }
            sv.migration = [policy]
            s.workload.services = sv
            s.topology.coordinator.migrationPolicy = policy
            if let o = offload ?? sv.offload.first {
                guard OffloadPolicies.named(o) != nil else { throw ValidationError("--offload '\(o)' is unknown (known: \(OffloadPolicies.names.joined(separator: ", ")))") }
                if !sv.offload.isEmpty { sv.offload = [o]; s.workload.services = sv }
                s.topology.coordinator.offloadPolicy = o
            }
            guard ["router", "replicas"].contains(queueAt) else { throw ValidationError("--queue-at must be 'router' or 'replicas' (got '\(queueAt)')") }
            guard queueAt == "router" || twinOnly else { throw ValidationError("--queue-at replicas needs --twin-only: the testbed's coordinator always holds requests at its router") }
            guard (1...20).contains(repetitions) else { throw ValidationError("--repetitions must be 1…20 (got \(repetitions))") }
            guard (1...20).contains(twinRuns) else { throw ValidationError("--twin-runs must be 1…20 (got \(twinRuns))") }
            var seedList = try seeds.map { try ExperimentSpec.parseSeeds($0) } ?? [s.seeds.first ?? 1]
            // Runs already made: their seeds are the ones the twin replays.
            var earlier: [ExperimentSummary] = []
            if !against.isEmpty {
                guard !twinOnly else { throw ValidationError("--against compares with testbed runs; --twin-only compares nothing: give one or the other") }
                let offloadCompared = !(s.workload.services?.offload.isEmpty ?? true)
                earlier = try TwinValidateSpec.runs(in: against, spec: s.name, policy: offloadCompared ? s.topology.coordinator.offloadPolicy ?? "" : policy,
                                                    offload: offloadCompared, seeds: seeds == nil ? nil : seedList)
                seedList = earlier.map(\.seed).reduce(into: [UInt64]()) { if !$0.contains($1) { $0.append($1) } }
            }
            // Each seed's requests, the same in its testbed runs and in its twin run.
            s.seeds = twinOnly ? seedList : seedList.flatMap { Array(repeating: $0, count: repetitions) }; s.repetitions = s.seeds.count
            let dataDir = DataPaths.dataDirectory(data)
            let runner = ExperimentRunner(spec: s, platform: LocalPlatform(runDirectory: runDir), out: out + "/testbed")
            runner.dataDirectory = dataDir

            // The twin: the same services, requests (same seed), faults and policies.
            let nodes = ClusterSpec.nodes(of: s.topology)
            let (kb, _, _) = KnowledgeSeeding.seeded(dataDirectory: dataDir, gpuModels: Array(Set(nodes.map(\.gpuModel))))
            let services = try runner.services()
            let scale = s.topology.coordinator.timeScale
            var options = TwinOptions()
            if queueAt == "replicas" { options.routerHoldFactor = nil }
            options.reportLatency = 0.010 * scale
            options.startLatency = 0.010 * scale
            options.serveLatency = 0.0014 * scale
            options.reportInterval = Double(s.topology.coordinator.heartbeatMs) / 1000 * scale
            // A killed agent's process starting again and registering: 0.68–0.78 s (mean 0.72 s)
            // from the fault's end to the coordinator's "registered" in eight local testbed runs,
            // all but 5–9 ms of it the process starting (0.66–1.19 s before a register the socket
            // refused was sent again at once).
            options.rejoinLatency = 0.72 * scale
            // Faults happen at wall seconds since the workload started, which is trace second 0 at the time scale.
            let detect = (Double(s.topology.coordinator.deadAfterMs) - Double(s.topology.coordinator.heartbeatMs) / 2) / 1000 * scale
            for f in s.faults {
                switch f.action {
                case .kill: for n in f.nodes { options.failures.append(NodeFailure(node: n, at: f.at * scale, downFor: (f.duration ?? 1e6) * scale, detectedAfter: detect)) }
                case .drain: for n in f.nodes { options.drains.append((n, f.at * scale, (f.end ?? 1e9) * scale)) }
                default: print("  note: the twin does not model '\(f.action.rawValue)' faults; \(f.describe) is left out")
                }
            }
            var m = MigrationTwinModel.Settings(MigrationSettings(), timeScale: scale)
            m.migration.policy = policy
            m.migration.method = MigrationMethod(rawValue: s.topology.coordinator.migrationMethod) ?? .live
            m.migration.staging = s.topology.coordinator.migrationStaging
            if let link = s.topology.coordinator.kvLink { m.migration.kvLinkBytesPerSecond = link == "0" ? 0 : (try NetworkConditions.parseBandwidth(link) ?? 0) }
            // A decision reaches the source with the next command round and its reservation takes a
            // data-plane round trip: a few wall milliseconds.
            m.controlLatency = 0.003 * scale
            // The coordinator decides on the loads replicas report with each heartbeat.
            m.loadReportInterval = Double(s.topology.coordinator.heartbeatMs) / 1000 * scale
            // The coordinator's rounds have no phase tied to the workload: as modelled, half an
            // interval (the mean wait from an event to the next round); jittered runs draw it.
            m.firstRoundAfter = m.interval / 2
            options.migration = m
            var w = Workload(name: s.name, jobs: [], skipped: [])
            w.services = services
            guard let p = Policies.named(s.topology.coordinator.policy) else { throw ValidationError("unknown policy \(s.topology.coordinator.policy)") }
            // A service no replica can be planned for would leave its requests waiting for ever
            // (the coordinator rejects it too): say why before anything runs.
            let unplanned = Scheduler(policy: p, kb: kb, services: services).skippedServices
            if !unplanned.isEmpty {
                throw ValidationError("\(spec): " + unplanned.map { "service \($0.id): \($0.reason)" }.joined(separator: "; "))
            }
            // The testbed first: the twin's memory tiers take the figures its hosts probed.
            var testbedRuns: [ExperimentSummary] = []
            if !earlier.isEmpty {
                testbedRuns = earlier
                print("  testbed: \(earlier.count) run(s) already made, seeds \(seedList.map(String.init).joined(separator: ", ")), from \(against.joined(separator: ", "))")
            } else if !twinOnly {
                if let old = Testbed.load(runDirectory: runDir) { old.down() }
                testbedRuns = try runner.runAll()
                guard testbedRuns.count == s.seeds.count else { throw ValidationError("\(s.seeds.count - testbedRuns.count) of \(s.seeds.count) testbed runs did not finish") }
            }
            options.tiers = try TwinValidateSpec.tierSettings(s, measured: testbedRuns.first?.offload.figures)
            if let t = options.tiers { print("  twin memory tiers: policy \(t.policy), \(t.hosts.count) hosts, figures \(t.figuresSource)") }
            let several = seedList.count > 1
            /// Where a seed's twin writes its tables: twin/, or twin/seed-N/ when there are several.
            func twinDirectory(_ seed: UInt64) -> String { out + "/twin" + (several ? "/seed-\(seed)" : "") }
            var twins: [RunResult] = []
            /// Every twin run, with its seed: `twinRuns` per seed, the first as modelled.
            var allTwins: [(seed: UInt64, result: RunResult)] = []
            for seed in seedList {
                var o = options
                o.requests = runner.requests(services, seed: seed)
                for k in 1..<twinRuns {
                    allTwins.append((seed, DigitalTwin(nodes: nodes, workload: w, kb: kb, options: o.jittered(run: k)).run(policy: p)))
                }
                let rounds = RoundLog()
                if logRounds { o.migration?.roundLog = { t, line in rounds.append(String(format: "migration round t=%.1f ", t) + line) } }
                let twin = DigitalTwin(nodes: nodes, workload: w, kb: kb, options: o).run(policy: p)
                twins.append(twin)
                allTwins.append((seed, twin))
                // What a twin run could not do (a service never planned, requests stuck, blocks lost), said once per seed.
                // (The jittered runs come first, the run as modelled last.)
                let runs = allTwins.filter { $0.seed == seed }.map(\.result)
                for (k, r) in runs.enumerated() where !r.skipped.isEmpty {
                    print("  twin (seed \(seed)\(k == runs.count - 1 ? "" : ", jittered run \(k + 1)")): " + r.skipped.joined(separator: "; "))
                }
                // The twin's requests and migrations in the testbed's columns.
                try FileManager.default.createDirectory(atPath: twinDirectory(seed), withIntermediateDirectories: true)
                try RequestsTable.csv(twin.requests).write(toFile: twinDirectory(seed) + "/requests.csv", atomically: true, encoding: .utf8)
                if !twin.migrationRecords.isEmpty {
                    try MigrationsTable.write(twin: twin.migrationRecords, method: options.migration?.migration.method.rawValue ?? "", to: twinDirectory(seed) + "/migrations.csv")
                }
                if logRounds {
                    try rounds.text.write(toFile: twinDirectory(seed) + "/rounds.log", atomically: true, encoding: .utf8)
                    print("  the twin's policy rounds (seed \(seed)): \(twinDirectory(seed))/rounds.log")
                }
            }
            /// How many requests a twin run moved.
            func moved(_ r: RunResult) -> Int { r.migrations.filter { $0.key.hasPrefix("state/") }.reduce(0) { $0 + $1.value } }
            for (seed, twin) in zip(seedList, twins) where twinOnly || seed == seedList[0] {
                let twinBalance = ReplicaBalance(twin.requests.compactMap { q in q.ttft.map { ReplicaBalance.Row(arrival: q.arrival, replica: q.replica ?? "", ttft: $0) } })
                if several && twinOnly { print("seed \(seed):") }
                if !twin.tiers.isEmpty {
                    let t = twin.tiers
                    let prompt = Double((t["prompt_tokens"] ?? 0) + (t["gpu_prompt_tokens"] ?? 0))
                    print("  twin prefix hits" + (several && !twinOnly ? " (seed \(seed))" : "") + ": " + String(format: "%.1f%% of prompt tokens", prompt > 0 ? Double((t["hit_tokens"] ?? 0) + (t["gpu_hit_tokens"] ?? 0)) / prompt * 100 : 0)
                          + ", \(t["gpu_hits"] ?? 0) from GPU caches, \(t["hits"] ?? 0)/\(t["lookups"] ?? 0) tier lookups, \(t["fallbacks"] ?? 0) fallbacks, \(t["swap_outs"] ?? 0) swaps, \(t["prefix_routed"] ?? 0) routed by prefix")
                }
                if twinOnly {
                    print("twin only, migration policy \(policy), requests wait at the \(queueAt == "router" ? "router (up to \(RequestRouter.defaultHoldFactor)× batch per replica)" : "replicas")" + (options.tiers.map { ", offload policy \($0.policy)" } ?? "") + ":")
                    for b in twin.services {
                        print("  \(b.id): " + String(format: "P50 TTFT %.2f s, P99 TTFT %.2f s, P99 latency %.2f s, preemptions %d, P50 of each request's longest gap between tokens %.3f s",
                                                       b.ttftP50 ?? .nan, b.ttftP99 ?? .nan, b.latencyP99 ?? .nan, b.preemptions ?? 0, b.maxTBTP50 ?? .nan))
                    }
                    let count = moved(twin)
                    print("  migrations \(count): " + twin.migrations.filter { $0.key.hasPrefix("reason/") }.sorted { $0.key < $1.key }.map { "\($0.key.dropFirst(7)) \($0.value)" }.joined(separator: ", ")
                          + (twin.migrations["staged"].map { "; \($0) staged through a memory host" } ?? "")
                          + (count > 0 ? " (" + twin.migrations.filter { $0.key.hasPrefix("state/") }.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key.dropFirst(6))" }.joined(separator: ", ") + ")" : ""))
                    print("  " + twinBalance.sentence)
                    if let p = PriorityClasses(twin.requests.compactMap { q in q.ttft.map { PriorityClasses.Row(highPriority: q.highPriority, ttft: $0, meanTBT: q.meanTBT, maxTBT: q.maxTBT) } }) {
                        print("  " + p.sentence)
                    }
                    if twinRuns > 1 {
                        // The same seed with the control plane's timing jittered: how far the twin itself swings.
                        let runs = allTwins.filter { $0.seed == seed }.map(\.result)
                        let p99 = runs.compactMap { $0.services.first?.ttftP99 }, counts = runs.map { moved($0) }
                        if let lo = p99.min(), let hi = p99.max(), let a = counts.min(), let b = counts.max() {
                            print(String(format: "  with timing jitter (%d runs): P99 TTFT %.2f–%.2f s, migrations %d–%d", runs.count, lo, hi, a, b))
                        }
                    }
                    print("  each request: \(twinDirectory(seed))/requests.csv" + (twin.migrationRecords.isEmpty ? "" : "; each migration: \(twinDirectory(seed))/migrations.csv"))
                }
            }
            if twinOnly { return }
            let testbed = testbedRuns[0]
            /// A figure's mean over the testbed runs (those that have it).
            func mean(_ f: (ExperimentSummary) -> Double?) -> Double {
                let v = testbedRuns.compactMap(f).filter(\.isFinite)
                return v.isEmpty ? .nan : v.reduce(0, +) / Double(v.count)
            }
            /// A figure's mean over the twin's runs (every seed, every run with jitter).
            func twinMean(_ f: (RunResult) -> Double?) -> Double {
                let v = allTwins.map(\.result).compactMap(f).filter(\.isFinite)
                return v.isEmpty ? .nan : v.reduce(0, +) / Double(v.count)
            }
            /// "; twin runs LO–HI" over one seed's jittered twin runs.
            func twinSpread(_ f: (RunResult) -> Double?, format: String) -> String {
                guard twinRuns > 1, !several else { return "" }
                let v = allTwins.map(\.result).compactMap(f).filter(\.isFinite)
                guard let lo = v.min(), let hi = v.max() else { return "" }
                return "; twin runs " + String(format: format, lo) + "–" + String(format: format, hi)
            }
            /// A figure's lowest and highest over the testbed runs of one seed: how much the testbed
            /// itself varies (over several seeds the requests differ too: the seed-by-seed lines say that).
            func range(_ f: (ExperimentSummary) -> Double?) -> (Double, Double)? {
                guard !several else { return nil }
                let v = testbedRuns.compactMap(f).filter(\.isFinite)
                guard v.count > 1, let lo = v.min(), let hi = v.max() else { return nil }
                return (lo, hi)
            }
            /// "  testbed runs LO–HI; the twin's inside|outside", for a figure compared.
            func spread(_ f: (ExperimentSummary) -> Double?, twin y: Double, format: String) -> String {
                guard let (lo, hi) = range(f) else { return "" }
                return "  testbed runs " + String(format: format, lo) + "–" + String(format: format, hi) + ((lo...hi).contains(y) ? "; the twin's inside" : "; the twin's outside")
            }
            let twinOver = twinRuns > 1 ? "; twin: \(allTwins.count) runs with timing jitter" : ""
            let over = several ? " (means over \(seedList.count) seeds; testbed: \(testbedRuns.count) runs\(twinOver))"
                : testbedRuns.count > 1 || twinRuns > 1 ? " (testbed: mean of \(testbedRuns.count) run(s)\(twinOver))" : ""
            if testbedRuns.count > 1 {
                for (k, r) in testbedRuns.enumerated() {
                    let figures: [String] = r.requests.services.map { String(format: "%@ P99 TTFT %.2f s, P50 %.2f s", $0.id as NSString, $0.ttftP99, $0.ttftP50) }
                    let reasons: [String] = r.migrations.byReason.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
                    let downtime: String = r.migrations.downtimeP50Ms.map { String(format: ", downtime p50 %.1f ms", $0) } ?? ""
                    let staged = r.migrations.staged > 0 ? ", \(r.migrations.staged) staged" : ""
                    print("  testbed run \(k + 1)\(several ? " (seed \(r.seed))" : ""): \(figures.joined(separator: "; ")), migrations \(r.migrations.started) (\(reasons.joined(separator: ", "))\(staged))\(downtime)")
                }
            }
            if testbed.offload.known && testbed.offload.lookups > 0 {
                print("  testbed prefix hits: " + String(format: "%.1f%% of prompt tokens", testbed.offload.hitRatio * 100) + ", \(testbed.offload.hits)/\(testbed.offload.lookups) lookups, \(testbed.offload.fallbacks) fallbacks")
            }

            func err(_ a: Double, _ b: Double) -> Double { a > 0 ? abs(b - a) / a : (b == 0 ? 0 : .infinity) }
            var text = "figure                        testbed      twin     error\(over)\n"
            var worst = 0.0
            for a in testbed.requests.services {
                guard twins[0].services.contains(where: { $0.id == a.id }) else { continue }
                func of(_ r: ExperimentSummary) -> RequestAccounting.Service? { r.requests.services.first { $0.id == a.id } }
                func of(_ r: RunResult) -> ServiceOutcome? { r.services.first { $0.id == a.id } }
                let rows: [(String, Double, Double, Bool)] = [
                    ("\(a.id) P99 TTFT s", mean { of($0)?.ttftP99 }, twinMean { of($0)?.ttftP99 }, true),
                    ("\(a.id) P50 TTFT s", mean { of($0)?.ttftP50 }, twinMean { of($0)?.ttftP50 }, false),
                    ("\(a.id) P99 latency s", mean { of($0)?.latencyP99 }, twinMean { of($0)?.latencyP99 }, false),
                    ("\(a.id) preemptions", mean { of($0).map { Double($0.preemptions) } }, twinMean { Double(of($0)?.preemptions ?? 0) }, false),
                ]
                for (name, x, y, target) in rows {
                    let e = err(x, y)
                    if target { worst = max(worst, e) }
                    text += name.padding(toLength: 28, withPad: " ", startingAt: 0) + String(format: "%9.3f %9.3f   %6.1f%%", x, y, e * 100) + (target ? "  (target ≤ 10 %)" : "")
                        + (target ? spread({ of($0)?.ttftP99 }, twin: y, format: "%.2f") + twinSpread({ of($0)?.ttftP99 }, format: "%.2f") : "") + "\n"
                }
            }
            let tbMoved = mean { Double($0.migrations.started) }, twMoved = twinMean { Double(moved($0)) }
            let e = err(tbMoved, twMoved)
            worst = max(worst, e)
            text += "migrations".padding(toLength: 28, withPad: " ", startingAt: 0) + String(format: "%9.1f %9.1f   %6.1f%%  (target ≤ 10 %%)", tbMoved, twMoved, e * 100)
                + spread({ Double($0.migrations.started) }, twin: twMoved, format: "%.0f") + twinSpread({ Double(moved($0)) }, format: "%.0f") + "\n"
            let reasons = Set(testbedRuns.flatMap(\.migrations.byReason.keys)).union(twins.flatMap(\.migrations.keys).filter { $0.hasPrefix("reason/") }.map { String($0.dropFirst(7)) })
            for k in reasons.sorted() {
                text += "  \(k)".padding(toLength: 28, withPad: " ", startingAt: 0)
                    + String(format: "%9.1f %9.1f\n", mean { Double($0.migrations.byReason[k] ?? 0) }, twinMean { Double($0.migrations["reason/" + k] ?? 0) })
            }
            let tbStaged = mean { Double($0.migrations.staged) }
            if tbStaged > 0 || twins.contains(where: { $0.migrations["staged"] != nil }) {
                text += "  staged via a memory host".padding(toLength: 28, withPad: " ", startingAt: 0) + String(format: "%9.1f %9.1f\n", tbStaged, twinMean { Double($0.migrations["staged"] ?? 0) })
            }
            let d = allTwins.flatMap(\.result.migrationDowntimes).sorted()
            text += "downtime p50 ms".padding(toLength: 28, withPad: " ", startingAt: 0)
                + String(format: "%9.1f %9.1f\n", mean { $0.migrations.downtimeP50Ms }, d.isEmpty ? .nan : percentile(d, 50) * 1000)
            if several {
                // Seed by seed: that seed's testbed runs against its twin run.
                var rows: [SeedBySeed.Row] = []
                for seed in seedList {
                    let runs = testbedRuns.filter { $0.seed == seed }
                    let mine = allTwins.filter { $0.seed == seed }.map(\.result)
                    for a in testbed.requests.services {
                        let y = mine.compactMap { $0.services.first { $0.id == a.id }?.ttftP99 }
                        guard !y.isEmpty else { continue }
                        rows.append(SeedBySeed.Row(seed: seed, figure: "\(a.id) P99 TTFT s",
                                                   testbed: runs.compactMap { $0.requests.services.first { $0.id == a.id }?.ttftP99 }, twinRuns: y))
                    }
                    rows.append(SeedBySeed.Row(seed: seed, figure: "migrations", testbed: runs.map { Double($0.migrations.started) }, twinRuns: mine.map { Double(moved($0)) }))
                }
                text += SeedBySeed(rows: rows).text
            }
            print("\n" + text)
            let onWhat = several ? " (means over \(seedList.count) seeds)" : ""
            print(worst <= 0.10 ? "twin within 10 % on P99 TTFT and migration counts\(onWhat): target met" : String(format: "twin off by %.1f %% at worst (target 10 %%)%@: NOT met", worst * 100, onWhat))
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            try text.write(toFile: out + "/validation.txt", atomically: true, encoding: .utf8)
            print("results in \(out)/ (testbed run in \(out)/testbed/)")
        }
    }
}

/// Lines a twin run's policy rounds give, gathered for `twin/rounds.log`.
final class RoundLog: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ line: String) { lock.lock(); lines.append(line); lock.unlock() }
    var text: String { lock.lock(); defer { lock.unlock() }; return lines.joined(separator: "\n") + (lines.isEmpty ? "" : "\n") }
}

enum TwinValidateSpec {
    /// The runs of one policy of `spec` in results folders made before (`--against`): each folder
    /// holds one run's summary.json or several's; a folder of another spec, or with no run of the
    /// policy (of the seeds asked for), is a named error rather than a comparison with nothing.
    static func runs(in folders: [String], spec: String, policy: String, offload: Bool, seeds: [UInt64]?) throws -> [ExperimentSummary] {
        var out: [ExperimentSummary] = []
        for dir in folders {
            let all: [ExperimentSummary]
            if let several = ExperimentSummary.loadAll(from: dir) { all = several } else {
                do { all = [try ExperimentSummary.load(from: dir)] } catch { throw ValidationError("--against \(dir): \(error)") }
            }
            if let other = all.first(where: { $0.name != spec }) {
                throw ValidationError("--against \(dir): its runs are of spec '\(other.name)', not '\(spec)'")
            }
            let mine = all.filter { (offload ? $0.offloadPolicy : $0.migrationPolicy) == policy && (seeds?.contains($0.seed) ?? true) }
            guard !mine.isEmpty else {
                let had = Set(all.map { offload ? $0.offloadPolicy : $0.migrationPolicy }).sorted().joined(separator: ", ")
                throw ValidationError("--against \(dir): no run of \(offload ? "offload" : "migration") policy '\(policy)'" + (seeds.map { " on seeds \($0.map(String.init).joined(separator: ","))" } ?? "") + " (it has \(had))")
            }
            out += mine
        }
        // By seed; one seed's runs in the order found.
        return out.enumerated().sorted { ($0.element.seed, $0.offset) < ($1.element.seed, $1.offset) }.map(\.element)
    }

    /// The twin's memory hosts from the topology's memory nodes (their tiers and capacities), the
    /// offload policy, link and scale of the spec, and each tier's figures as the testbed's hosts
    /// probed them (`measured`: "host/kind" → [GB/s, ns]) or nominal ones. Nil: no memory node.
    static func tierSettings(_ s: ExperimentSpec, measured: [String: [Double]]?) throws -> TiersTwinModel.Settings? {
        var hosts: [TiersTwinModel.Host] = []
        var nominal = false
        for n in s.topology.nodes {
            guard case .memory(let tiers) = n.spec else { continue }
            hosts.append(TiersTwinModel.Host(node: n.id, tiers: tiers.map { t in
                let kind = t.kind.name
                let fig: TierFigures
                if let m = measured?["\(n.id)/\(kind)"], m.count == 2 {
                    fig = TierFigures(kind: kind, bandwidthBytesPerSecond: m[0] * 1e9, latencySeconds: m[1] * 1e-9)
                } else { nominal = true; fig = TiersTwinModel.Settings.nominal(kind) }
                return TiersTwinModel.Tier(kind: kind, capacityBytes: Int(t.capacityBytes), figures: fig)
            }))
        }
        guard !hosts.isEmpty else { return nil }
        let c = s.topology.coordinator
        let link = try c.tierLink.map { try NetworkConditions.parseBandwidth($0) ?? 0 } ?? 12.5e9
        return TiersTwinModel.Settings(policy: c.offloadPolicy ?? "tiered", hosts: hosts, linkBytesPerSecond: link,
                                       kvBytesScale: s.workload.services?.kvBytesScale ?? c.kvBytesScale ?? SchedulingController.defaultKVBytesScale,
                                       lookupTimeout: 5 * c.timeScale, figuresSource: nominal ? "nominal (D2.1 ratios; no testbed run)" : "measured on the testbed")
    }
}


/// `strato twin validate-spec` for a game spec: the testbed run, then the game twin over the same
/// players (device, network, behaviour), render sites, faults and policy; mean FPS and completed
/// switches compared (target within 5 %).
enum TwinGame {
    static func model(_ s: ExperimentSpec, scaleTo: Int? = nil) throws -> (players: [(id: String, setup: PlayerSetup)], sites: [GameTwinModel.Site], settings: GameTwinModel.Settings, policy: RenderPolicy) {
        let t = s.topology
        var players: [(id: String, setup: PlayerSetup)] = []
        let total = t.nodes.reduce(0) { n, x in if case .player = x.spec { return n + x.virtual }; return n }
        for n in t.nodes {
            guard case .player(let ps) = n.spec else { continue }
            let count = scaleTo.map { max(1, Int((Double(n.virtual) / Double(max(1, total)) * Double($0)).rounded())) } ?? n.virtual
            for i in 0..<count {
                let d = DeviceCatalog.device(named: ps.devices[i % ps.devices.count])!
                let net = ps.network.flatMap(DeviceCatalog.network(named:)) ?? DeviceCatalog.network(named: d.defaultNetwork)!
                var setup = PlayerSetup(device: d, network: net, behaviour: Behaviour.named(ps.behaviours[i % ps.behaviours.count]) ?? .randomWalk)
                setup.viewDistance = ps.viewDistance; setup.otherLoad = ps.otherLoad; setup.dockAfterSeconds = ps.dockAfter; setup.battery = ps.battery
                players.append((count > 1 || n.virtual > 1 ? "\(n.id)-\(i)" : n.id, setup))
            }
        }
        var sites: [GameTwinModel.Site] = []
        var settings = GameTwinModel.Settings()
        for n in t.nodes {
            switch n.spec {
            case let .render(slots, gpu):
                sites.append(GameTwinModel.Site(id: n.id, kind: n.siteKind == .edge ? "edge" : "cloud", slots: slots, gpuModel: gpu, oneWayMs: t.network[n.siteName]?.delayMs ?? 0))
            case let .world(hz, entities, seed):
                settings.tickHz = hz; settings.entities = entities; settings.seed = UInt64(seed); settings.worldOneWayMs = t.network[n.siteName]?.delayMs ?? 0
            default: break
            }
        }
        settings.seconds = s.duration
        settings.deadAfterSeconds = Double(t.coordinator.deadAfterMs) / 1000
        for f in s.faults {
            switch f.action {
            case .kill:
                for n in f.nodes where sites.contains(where: { $0.id == n }) { settings.siteDown.append((n, f.at, f.end ?? .infinity)) }
            case .slow where f.latencyMs != nil:
                for n in f.nodes where sites.contains(where: { $0.id == n }) { settings.siteSlow.append((n, f.at, f.end ?? .infinity, f.latencyMs!)) }
            default:
                print("  note: the game twin does not model '\(f.action.rawValue)' faults on these nodes; \(f.describe) is left out")
            }
        }
        let policy = try RenderPolicies.named(t.coordinator.renderPolicy ?? "adaptive", script: t.coordinator.renderScript)
        return (players, sites, settings, policy)
    }

    static func validate(_ spec: ExperimentSpec, out: String, runDir: String, twinOnly: Bool, players: Int?, repetitions: Int = 1) throws {
        guard (1...20).contains(repetitions) else { throw ValidationError("--repetitions must be 1…20 (got \(repetitions))") }
        var s = spec
        let first = s.seeds.first ?? 1
        s.seeds = (0..<repetitions).map { first + UInt64($0) }; s.repetitions = repetitions
        var m = try model(s, scaleTo: twinOnly ? players : nil)
        var twins: [GameTwinModel.Result] = []
        for k in 0..<repetitions {
            m.settings.runSeed = UInt64(k)
            let started = Date()
            let twin = GameTwinModel.run(players: m.players, sites: m.sites, policy: m.policy, settings: m.settings)
            let wall = Date().timeIntervalSince(started)
            let forced = twin.switches.filter(\.forced).count, back = twin.switches.filter(\.rolledBack).count
            print(String(format: "twin%@: %d players, %d sites, %.0f s of game in %.2f s wall: mean FPS %.1f, %d switches completed (%d fall-backs), %d rolled back",
                         repetitions > 1 ? " run \(k + 1)" : "", m.players.count, m.sites.count, m.settings.seconds, wall, twin.meanFPS, twin.completedSwitches, forced, back))
            twins.append(twin)
        }
        if twinOnly { return }
        if let old = Testbed.load(runDirectory: runDir) { old.down() }
        let runner = ExperimentRunner(spec: s, platform: LocalPlatform(runDirectory: runDir), out: out + "/testbed")
        let runs = try runner.runAll().compactMap(\.game)
        guard runs.count == repetitions else { throw ValidationError("\(repetitions - runs.count) of \(repetitions) testbed runs reported no game") }
        func meanFPS(_ g: GameAccounting) -> Double {
            let w = g.windows.filter { $0.t >= 0 && $0.t < s.duration }.map(\.fps)
            return w.isEmpty ? 0 : w.reduce(0, +) / Double(w.count)
        }
        func switches(_ g: GameAccounting) -> Int { g.switches.filter { !$0.rolledBack && $0.t >= 0 }.count }
        func avg(_ xs: [Double]) -> Double { xs.reduce(0, +) / Double(max(1, xs.count)) }
        func err(_ a: Double, _ b: Double) -> Double { a > 0 ? abs(b - a) / a : (b == 0 ? 0 : .infinity) }
        let tbFPS = avg(runs.map(meanFPS)), twFPS = avg(twins.map(\.meanFPS))
        let tbSw = avg(runs.map { Double(switches($0)) }), twSw = avg(twins.map { Double($0.completedSwitches) })
        let e1 = err(tbFPS, twFPS), e2 = err(tbSw, twSw)
        let over = repetitions > 1 ? ", mean of \(repetitions)" : ""
        let w = repetitions > 1 ? 34 : 28
        var text = "figure".padding(toLength: w + 2, withPad: " ", startingAt: 0) + "testbed      twin     error\n"
        text += ("mean FPS" + over).padding(toLength: w, withPad: " ", startingAt: 0) + String(format: "%9.2f %9.2f   %6.1f%%  (target ≤ 5 %%)\n", tbFPS, twFPS, e1 * 100)
        text += ("switches" + over).padding(toLength: w, withPad: " ", startingAt: 0) + String(format: "%9.1f %9.1f   %6.1f%%  (target ≤ 5 %%)\n", tbSw, twSw, e2 * 100)
        text += "fall-backs".padding(toLength: w, withPad: " ", startingAt: 0)
            + String(format: "%9.1f %9.1f\n", avg(runs.map { Double($0.switches.filter(\.forced).count) }), avg(twins.map { Double($0.switches.filter(\.forced).count) }))
        if repetitions > 1 {
            for k in 0..<repetitions {
                text += "  run \(k + 1): FPS, switches".padding(toLength: w, withPad: " ", startingAt: 0)
                    + String(format: "%5.2f, %2d  %5.2f, %2d\n", meanFPS(runs[k]), switches(runs[k]), twins[k].meanFPS, twins[k].completedSwitches)
            }
            let tbRange = runs.map(switches), twRange = twins.map(\.completedSwitches)
            text += String(format: "  switches run to run: testbed %d–%d, twin %d–%d\n", tbRange.min()!, tbRange.max()!, twRange.min()!, twRange.max()!)
        }
        for p in runs[0].players {
            let a = runs.flatMap { $0.windows.filter { $0.player == p.id && $0.t >= 0 && $0.t < s.duration }.map(\.fps) }
            let b = twins.flatMap { $0.windows[p.id]?.map(\.fps) ?? [] }
            text += "  \(p.id) FPS".padding(toLength: w, withPad: " ", startingAt: 0)
                + String(format: "%9.2f %9.2f\n", avg(a), avg(b))
        }
        print("\n" + text)
        let worst = max(e1, e2)
        print(worst <= 0.05 ? "twin within 5 % on mean FPS and switch counts\(over): target met" : String(format: "twin off by %.1f %% at worst (target 5 %%)%@: NOT met", worst * 100, over))
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try text.write(toFile: out + "/validation.txt", atomically: true, encoding: .utf8)
        print("results in \(out)/ (testbed run in \(out)/testbed/)")
    }
}
