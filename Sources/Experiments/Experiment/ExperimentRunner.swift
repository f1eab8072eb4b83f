import Cluster
import Features
import Foundation
import Protocol
import Scheduling

/// Where an experiment runs: brings the topology up and down, reaches its coordinator, breaks
/// things, and gathers raw files afterwards.
public protocol ExperimentPlatform: AnyObject {
    var name: String { get }
    /// Starts everything with tracing on; returns an operator client for the coordinator.
    func up(_ spec: ExperimentSpec, progress: (String) -> Void) throws -> OperatorClient
    var faults: FaultBackend { get }
    /// Stops every process (agents first, so they ship their last trace batch).
    func down(progress: (String) -> Void)
    /// Copies trace files (collector and spools) into `traceDir`, logs into `logDir`.
    func collect(traceDir: String, logDir: String) throws
}

/// Runs one experiment spec end to end, repetition by repetition, and writes the results folder.
public final class ExperimentRunner: @unchecked Sendable {
    /// The spec as given; each run sets its own migration policy on it (`variants`).
    public private(set) var spec: ExperimentSpec
    public let platform: ExperimentPlatform
    public let out: String
    public var dataDirectory = DataPaths.dataDirectory()
    public var print: (String) -> Void = { Swift.print($0) }
    /// Faults injected live into this run by `strato fault inject` land in the trace anyway; this
    /// only says how often progress lines appear.
    public var progressInterval = 2.0

    private let interruptLock = NSLock()
    private var interrupted = false
    /// Ends the run early (Ctrl-C): the final heal, collection and teardown still happen.
    public func interrupt() { interruptLock.lock(); interrupted = true; interruptLock.unlock() }
    private var isInterrupted: Bool { interruptLock.lock(); defer { interruptLock.unlock() }; return interrupted }

    public init(spec: ExperimentSpec, platform: ExperimentPlatform, out: String) {
        self.spec = spec
        self.platform = platform
        self.out = out
    }

    /// Runs every repetition; returns their summaries (also written to `out`).
    public func runAll() throws -> [ExperimentSummary] {
        let fm = FileManager.default
        try? fm.removeItem(atPath: out)
        try fm.createDirectory(atPath: out, withIntermediateDirectories: true)
        var summaries: [ExperimentSummary] = []
        var directories: [String] = []
        let variants = variants
        let total = variants.count * spec.seeds.count
        var n = 0
        for policy in variants {
            spec.topology = spec.topology(forVariant: policy)
            for (i, seed) in spec.seeds.enumerated() {
                n += 1
                var dir = out
                if variants.count > 1 { dir += "/\(policy)" }
                if spec.repetitions > 1 { dir += "/run-\(i + 1)-seed-\(seed)" }
                let what = variants.count > 1 ? "\(variantsAreOffload ? "offload" : "migration") policy \(policy), " : ""
                print("== \(spec.name): run \(n)/\(total) (\(what)seed \(seed)) on \(platform.name) ==")
                summaries.append(try runOnce(seed: seed, dir: dir))
                directories.append(dir)
                if isInterrupted { break }   // Ctrl-C ends the remaining runs too
            }
            if isInterrupted { print("  interrupted: \(total - n) runs not started"); break }
        }
        var comparison: String?
        // Policies side by side; or one policy's repeated runs of a services workload (its means and spread).
        let compared = variants.count > 1 || spec.workload.kind == .services
        if total > 1 {
            try ExperimentSummary.writeAll(summaries, to: out)
            if compared { comparison = try ExperimentComparison.write(summaries, runDirectories: directories, to: out, title: spec.name) }
            // A game over several seeds: the D2.1 phases with their spread over the runs.
            else { try GamePhasesOverRuns.write(summaries, runDirectories: directories, to: out, title: spec.name) }
        }
        print("")
        print(ExperimentSummary.table(summaries))
        // The comparison as written beside report.html (with each policy's load-balance line).
        if compared && total > 1 { print(""); print(comparison ?? ExperimentComparison.text(summaries)) }
        else if let phases = GamePhasesOverRuns.text(summaries) { print(""); print(phases); print("(\(out)/report.html, phases.csv)") }
        return summaries
    }

    /// The Mooncake service and its requests (the trace's own, not drawn: the same in every run).
    func mooncake() throws -> (ServiceSpec, [ServiceRequest]) {
        let sv = spec.workload.services!
        return try ServiceSetup.mooncakeService(dataDirectory: dataDirectory, seconds: spec.workload.hours * 3600, gpuModel: sv.gpu, meanRPS: sv.rps,
                                                sloSeconds: sv.sloSeconds, model: sv.model ?? "Meta-Llama-3-8B", minReplicas: sv.replicas ?? 1)
    }

    var variants: [String] { spec.variants }
    var variantsAreOffload: Bool { spec.variantsAreOffload }

    /// The workload for one seed (jobs to submit; none for idle).
    func workload(seed: UInt64) throws -> Workload? {
        switch spec.workload.kind {
        case .idle, .services, .game: return nil
        case .scheduling, .gavelTrace:
            let nodes = ClusterSpec.nodes(of: spec.topology)
            guard !nodes.isEmpty else {
                throw SpecError(file: spec.file, line: 0, field: "workload", message: "a \(spec.workload.kind.rawValue) workload needs GPU nodes in the topology")
            }
            let (kb, imported, _) = KnowledgeSeeding.seeded(dataDirectory: dataDirectory, gpuModels: Array(Set(nodes.map(\.gpuModel))))
            guard !imported.rows.isEmpty else {
                throw SpecError(file: spec.file, line: 0, field: "workload", message: "no knowledge could be read from \(dataDirectory)")
            }
            if let trace = spec.workload.traceFile {
                return try GavelTraceReader.read(file: trace, kb: kb, limit: spec.workload.maxJobs)
            }
            var g = TraceGenerator()
            g.jobsPerHour = spec.workload.jobsPerHour
            g.hours = spec.workload.hours
            var maxPer: [String: Int] = [:]
            for n in nodes { maxPer[n.gpuModel] = max(maxPer[n.gpuModel] ?? 0, n.gpuCount) }
            var w = try g.generate(seed: seed, kb: kb, maxGPUsPerNode: maxPer)
            if let m = spec.workload.maxJobs, w.jobs.count > m { w = Workload(name: w.name, jobs: Array(w.jobs.prefix(m)), skipped: w.skipped) }
            return w
        }
    }

    /// The online services of the workload (none unless it names `services`).
    public func services() throws -> [ServiceSpec] {
        guard let sv = spec.workload.services else { return [] }
        if sv.trace == "mooncake" {
            var s = try mooncake().0
            s.offloadWeights = sv.offloadWeights
            s.gpuMemoryUtilization = sv.gpuMemoryUtilization ?? s.gpuMemoryUtilization
            return [s]
        }
        var out = try ServiceSetup.azureServices(dataDirectory: dataDirectory, seconds: spec.workload.hours * 3600, gpuModel: sv.gpu,
                                                 meanRPS: sv.rps, sloSeconds: sv.sloSeconds, trace: sv.trace, minReplicas: sv.replicas ?? 1,
                                                 model: sv.model ?? "Llama-2-7b")
        for i in out.indices {
            out[i].maxNumSeqs = sv.maxNumSeqs ?? 0; out[i].offloadWeights = sv.offloadWeights
            out[i].gpuMemoryUtilization = sv.gpuMemoryUtilization ?? out[i].gpuMemoryUtilization
        }
        return out
    }

    /// The requests for one seed; `priority_share` of them, drawn by a hash of their id and the
    /// seed (the same ones in every policy's run), are high priority.
    public func requests(_ services: [ServiceSpec], seed: UInt64) -> [ServiceRequest] {
        var out = spec.workload.services?.trace == "mooncake" ? ((try? mooncake().1) ?? [])
            : RequestStream.generate(services, until: spec.workload.hours * 3600, seed: seed)
        let share = spec.workload.services?.priorityShare ?? 0
        guard share > 0 else { return out }
        for i in out.indices { out[i].highPriority = Self.isHighPriority(out[i].id, seed: seed, share: share) }
        return out
    }

    /// Whether a request is drawn high priority: a uniform draw from its id and the seed below
    /// `share`. The id's FNV-1a hash alone is not a uniform draw: ids that differ only in their
    /// last characters (q1800, q1801, …) share its high bits, so whole runs of consecutive
    /// requests came out high priority and others none (12.7 % of the migration trace's requests
    /// at a 10 % share, 0 to 200 in each 250). SplitMix64's finaliser spreads every bit of it.
    static func isHighPriority(_ id: String, seed: UInt64, share: Double) -> Bool {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
        for b in id.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        var mix = SplitMix64(seed: h)
        return mix.uniform() < share
    }

    func runOnce(seed: UInt64, dir: String) throws -> ExperimentSummary {
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/raw", withIntermediateDirectories: true)
        if let text = try? String(contentsOfFile: spec.file, encoding: .utf8) {
            try text.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        }
        if spec.topologyFile != spec.file, let text = try? String(contentsOfFile: spec.topologyFile, encoding: .utf8) {
            try text.write(toFile: dir + "/topology.yaml", atomically: true, encoding: .utf8)
        }
        let workload = try self.workload(seed: seed)
        let services = try self.services()
        let requests = self.requests(services, seed: seed)
        var driver: RequestDriver?
        var lastRequests: RequestsReply?
        // The runner records too: phases, submissions and fault windows, on the coordinator's host clock.
        try Tracer.shared.enable(process: "experiment", spoolDirectory: dir + "/raw/trace/experiment", heartbeatSample: spec.heartbeatSample)
        defer { Tracer.shared.disable() }
        var summary = ExperimentSummary(name: spec.name, seed: seed, platform: platform.name, startedAt: Date())
        summary.workload = spec.workload.kind.rawValue
        summary.policy = spec.topology.coordinator.policy
        if spec.workload.services != nil { summary.migrationPolicy = spec.topology.coordinator.migrationPolicy }
        if spec.workload.services != nil { summary.offloadPolicy = spec.topology.coordinator.offloadPolicy ?? "tiered" }
        if variantsAreOffload { summary.variantKind = "offload" }
        var lastMigrations: MigrationApiReply?
        var lastTiers: TiersApiReply?
        var lastGame: GameApiReply?
        let isGame = spec.workload.kind == .game
        var gameStart: Int64 = 0
        summary.timeScale = spec.topology.coordinator.timeScale
        summary.nodesTotal = spec.topology.nodeIDs.count
        summary.expectedProcesses = ["coordinator"] + spec.topology.nodes.map(\.id)

        var injectorRef: FaultInjector?
        var healErrors: [String] = []
        var lastJobs: JobsReply?
        var lastStatus: StatusReply?
        var submitted = 0, rejected: [String] = []
        var endReason = "duration"
        let upStart = Date()
        do {
            defer { platform.down { print("  \($0)") } }
            let client = try platform.up(spec) { print("  \($0)") }
            defer { client.close() }
            let upSeconds = Date().timeIntervalSince(upStart)
            let injector = FaultInjector(backend: platform.faults, operatorClient: client)
            injectorRef = injector
            Tracer.shared.instant("testbed up", category: "experiment", track: "phases")
            lastStatus = try waitAlive(client)
            summary.secondsToAlive = Date().timeIntervalSince(upStart)
            // On compose, bringing the platform up includes building the image.
            print(String(format: "  all %d nodes alive %.1f s after the start (bring-up %.1f s, then %.1f s waiting)",
                         spec.topology.nodeIDs.count, summary.secondsToAlive, upSeconds, summary.secondsToAlive - upSeconds))
            Tracer.shared.instant("all alive", category: "experiment", track: "phases")
            let t0 = Date()
            gameStart = SystemClock.shared.wallNanos()
            if let g = spec.workload.game {
                print("  \(g.players) players on \(g.devices.map { "\($0.count) \($0.name)" }.joined(separator: ", ")), render policy \(g.policy)")
            }
            if let w = workload {
                let start = SystemClock.shared.wallNanos()
                for chunk in stride(from: 0, to: w.jobs.count, by: 500) {
                    let part = w.jobs[chunk..<min(chunk + 500, w.jobs.count)].map(\.submission)
                    let r = try client.submit(Array(part), services: chunk == 0 ? services.map(\.submission) : [])
                    submitted += part.count
                    rejected += r.rejected.filter { r in !services.contains { r.hasPrefix($0.id + ":") } }
                    for r in r.rejected where services.contains(where: { r.hasPrefix($0.id + ":") }) { summary.problems.append("service rejected: \(r)") }
                }
                Tracer.shared.span("submit \(submitted) jobs", category: "workload", track: "workload", start: start, end: SystemClock.shared.wallNanos(),
                                   args: ["jobs": "\(submitted)", "rejected": "\(rejected.count)", "workload": w.name])
                print("  submitted \(submitted) jobs (\(w.name))\(rejected.isEmpty ? "" : ", \(rejected.count) rejected")")
                for r in rejected.prefix(5) { print("    rejected: \(r)") }
            } else if !services.isEmpty {
                let r = try client.submit([], services: services.map(\.submission))
                for x in r.rejected { summary.problems.append("service rejected: \(x)"); print("  service rejected: \(x)") }
                if r.accepted == 0 { throw SpecError(file: spec.file, line: 0, field: "workload.services", message: "the coordinator accepted none of the services: \(r.rejected.joined(separator: "; "))") }
                print("  submitted \(r.accepted) services (\(services.map(\.id).joined(separator: ", ")))")
            }
            if !requests.isEmpty {
                driver = try RequestDriver.start(requests, via: client)
                let high = requests.filter(\.highPriority).count
                print("  driving \(requests.count) inference requests for \(services.map(\.id).joined(separator: ", ")) at their arrival times"
                      + (high > 0 ? " (\(high) high priority)" : "") + (services.isEmpty ? "" : ", migration policy \(spec.topology.coordinator.migrationPolicy)")
                      // Offload needs memory hosts: without any the policy decides nothing, so it is not named.
                      + (services.isEmpty || !spec.topology.nodes.contains(where: { if case .memory = $0.spec { return true }; return false })
                         ? "" : ", offload policy \(spec.topology.coordinator.offloadPolicy ?? "tiered")"))
            }
            defer { driver?.stop() }
            // The timeline: every start and stop, in time order.
            var timeline: [(at: Double, start: Bool, index: Int)] = []
            for (i, f) in spec.faults.enumerated() {
                timeline.append((f.at, true, i))
                if let e = f.end { timeline.append((e, false, i)) }
            }
            timeline.sort { ($0.at, $0.start ? 1 : 0, $0.index) < ($1.at, $1.start ? 1 : 0, $1.index) }
            var ids: [Int: String] = [:]
            var lastProgress = Date.distantPast
            var coordinatorAnswers = true
            var doneShown = false   // the line that shows everything done, once (an end: duration run goes on)
            var lastMigrationPoll = -10.0
            while true {
                let elapsed = Date().timeIntervalSince(t0)
                while let next = timeline.first, next.at <= elapsed {
                    timeline.removeFirst()
                    let f = spec.faults[next.index]
                    do {
                        if next.start {
                            ids[next.index] = try injector.start(f)
                            print(String(format: "  ! %6.1f s  %@", elapsed, f.describe))
                        } else if let id = ids[next.index] {
                            try injector.stop(id)
                            print(String(format: "  ! %6.1f s  %@ (%@)", elapsed, f.action.healName, f.describe))
                        }
                    } catch {
                        healErrors.append("fault at line \(f.line) (\(f.describe)): \(error)")
                        print("  ! fault failed: \(error)")
                    }
                }
                // The coordinator may be down on purpose: keep the last answers then, and keep the
                // waits short so the fault timeline stays on time.
                coordinatorAnswers = false
                if let s = try? client.status(timeoutMs: 300) {
                    lastStatus = s
                    coordinatorAnswers = true
                    if workload != nil, let j = try? client.jobs(timeoutMs: 1000) { lastJobs = j }
                    if driver != nil, let r = try? client.requests(timeoutMs: 1000) { lastRequests = r }
                    if isGame, let g = try? client.game(timeoutMs: 1000) { lastGame = g }
                    if driver != nil, elapsed - lastMigrationPoll >= 2, let m = try? client.migrations(includeDone: true, limit: 100_000, timeoutMs: 1000) {
                        lastMigrations = m
                        lastMigrationPoll = elapsed
                    }
                }
                let jobsDone = workload == nil ? spec.workload.kind == .services
                    : lastJobs.map { $0.unfinished == 0 && $0.jobs.count >= submitted - rejected.count } == true
                let requestsDone = driver.map { $0.allAnswered(lastRequests) } ?? true
                let done = jobsDone && requestsDone
                if Date().timeIntervalSince(lastProgress) >= progressInterval || (done && !doneShown) {
                    lastProgress = Date()
                    doneShown = done
                    print(progressLine(elapsed: elapsed, jobs: lastJobs, requests: lastRequests, status: lastStatus, injector: injector, migrations: lastMigrations, game: lastGame)
                          + (coordinatorAnswers ? "" : " · coordinator not answering (last known shown)"))
                }
                if spec.end == .jobsDone && done && injector.active.isEmpty && timeline.allSatisfy({ !$0.start }) {
                    endReason = "jobs_done"
                    break
                }
                if isInterrupted { endReason = "interrupted"; print("  interrupted: healing, collecting and tearing down"); break }
                if elapsed >= spec.duration { endReason = spec.end == .jobsDone ? "duration limit (jobs unfinished)" : "duration"; break }
                Thread.sleep(forTimeInterval: 0.2)
            }
            summary.workloadSeconds = Date().timeIntervalSince(t0)
            // The final heal always runs, then the testbed gets a moment to settle and report.
            healErrors += injector.healAll()
            Tracer.shared.instant("final heal", category: "experiment", track: "phases", args: ["healed": "\(injector.healed)"])
            let settleUntil = Date().addingTimeInterval(30)
            while Date() < settleUntil {
                if let s = try? client.status(timeoutMs: 1000) {
                    lastStatus = s
                    let alive = s.nodes.filter { $0.state == .alive }.count
                    if alive == spec.topology.nodeIDs.count { break }
                }
                Thread.sleep(forTimeInterval: 0.3)
            }
            if workload != nil, let j = try? client.jobs(timeoutMs: 3000) { lastJobs = j }
            driver?.stop()
            if driver != nil, let r = try? client.requests(includeRequests: true, timeoutMs: 10000) { lastRequests = r }
            if driver != nil, let t = try? client.tiers(timeoutMs: 3000) { lastTiers = t }
            if isGame {
                // Players send their FPS windows every 5 s: wait for the batch that covers the end,
                // and for switches under way to end.
                let gameEnd = SystemClock.shared.wallNanos()
                let until = Date().addingTimeInterval(12)
                while Date() < until {
                    Thread.sleep(forTimeInterval: 1)
                    guard let g = try? client.game(includeWindows: true, timeoutMs: 5000) else { continue }
                    lastGame = g
                    let covered = g.players.allSatisfy { p in
                        g.windows.first { $0.player == p.player }?.batches.last.map { $0.firstStartUnixNanos + Int64(Double($0.fps.count) * $0.windowSeconds * 1e9) >= gameEnd } ?? !p.alive
                    }
                    if covered && !g.players.contains(where: { $0.report.switching }) { break }
                }
                summary.game = GameAccounting(lastGame, startNanos: gameStart, endNanos: gameEnd)
                summary.gameMaxGapMs = Double(spec.topology.coordinator.deadAfterMs)
            }
            if driver != nil {
                // Migrations still in flight get a moment to end (their requests are answered already).
                let until = Date().addingTimeInterval(10)
                while Date() < until {
                    guard let m = try? client.migrations(includeDone: true, limit: 100_000, timeoutMs: 3000) else { break }
                    lastMigrations = m
                    if !m.migrations.contains(where: { $0.state == "in-flight" || $0.state == "orphaned" }) { break }
                    Thread.sleep(forTimeInterval: 0.3)
                }
            }
            Thread.sleep(forTimeInterval: 0.6)   // one more trace shipment from every agent
            Tracer.shared.instant("end", category: "experiment", track: "phases", args: ["reason": endReason])
        }
        summary.endReason = endReason
        summary.faultLog = injectorRef?.log ?? []
        summary.faultsApplied = injectorRef?.applied ?? 0
        summary.faultsHealed = injectorRef?.healed ?? 0
        summary.problems += healErrors
        summary.nodesAliveAtEnd = lastStatus?.nodes.filter { $0.state == .alive }.count ?? 0
        Tracer.shared.disable()

        // Collect, then build everything from the raw files (the same code `strato report` runs).
        try platform.collect(traceDir: dir + "/raw/trace", logDir: dir + "/logs")
        if let j = lastJobs { try j.jsonString().write(toFile: dir + "/raw/jobs.json", atomically: true, encoding: .utf8) }
        if let s = lastStatus { try s.jsonString().write(toFile: dir + "/raw/status.json", atomically: true, encoding: .utf8) }
        if let g = lastGame { try g.jsonString().write(toFile: dir + "/raw/game.json", atomically: true, encoding: .utf8) }
        if let g = summary.game { try GameSection.writeCSV(g, to: dir) }
        summary.jobs = JobAccounting(submitted: submitted, rejected: rejected, reply: lastJobs, expectAllDone: spec.end == .jobsDone)
        if let d = driver {
            let p = d.snapshot
            summary.requests = RequestAccounting(generated: requests.count, accepted: p.accepted, rejected: p.rejected, reply: lastRequests,
                                                 expectAllDone: spec.end == .jobsDone)
            if p.sent < requests.count { summary.problems.append("\(requests.count - p.sent) requests were not sent before the run ended") }
            if let r = lastRequests { try RequestsTable.write(r, highPriority: Set(requests.filter(\.highPriority).map(\.id)), to: dir + "/requests.csv") }
            summary.migrations = MigrationAccounting(lastMigrations)
            summary.offload = OffloadAccounting(lastTiers)
            if let t = lastTiers { try t.jsonString().write(toFile: dir + "/raw/tiers.json", atomically: true, encoding: .utf8) }
            if let m = lastMigrations { try m.jsonString().write(toFile: dir + "/raw/migrations.json", atomically: true, encoding: .utf8) }
            if !summary.migrations.samples.isEmpty { try MigrationsTable.write(summary.migrations, to: dir + "/migrations.csv") }
        }
        if let w = workload, let j = lastJobs {
            let result = SchedulingTestbedRun.result(j, workload: w, nodes: ClusterSpec.nodes(of: spec.topology),
                                                     wallSeconds: summary.workloadSeconds, notes: [])
            let s = result.summary
            summary.meanJCTHours = s.meanJCT / 3600
            summary.p99JCTHours = s.p99JCT / 3600
            summary.makespanHours = s.makespan / 3600
            var results = SchedulingResults()
            results.runs = [result]
            try results.write(to: dir + "/scheduling", title: "\(spec.name): jobs on the testbed (seed \(seed))")
        }
        try summary.save(to: dir)
        let final = try ExperimentReport.build(directory: dir, title: spec.name, include: spec.outputs)
        print("  results in \(dir)/")
        return final
    }

    func waitAlive(_ client: OperatorClient) throws -> StatusReply {
        let deadline = Date().addingTimeInterval(spec.startTimeout)
        let ids = Set(spec.topology.nodeIDs)
        var last: StatusReply?
        var lastPrint = Date()
        while Date() < deadline {
            if let s = try? client.status(timeoutMs: 1000) {
                last = s
                let alive = s.nodes.filter { $0.state == .alive && ids.contains($0.nodeID) }.count
                if alive == ids.count { return s }
                if Date().timeIntervalSince(lastPrint) > 2 { lastPrint = Date(); print("  waiting: \(alive)/\(ids.count) nodes alive") }
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
        let alive = Set(last?.nodes.filter { $0.state == .alive }.map(\.nodeID) ?? [])
        throw ProcessLauncher.LaunchError(description: "not every node was alive within \(Int(spec.startTimeout)) s; missing: \(ids.subtracting(alive).sorted().joined(separator: ", "))")
    }

    func progressLine(elapsed: Double, jobs: JobsReply?, requests: RequestsReply?, status: StatusReply?, injector: FaultInjector,
                      migrations: MigrationApiReply? = nil, game: GameApiReply? = nil) -> String {
        var s = String(format: "  [%6.1f s]", elapsed)
        if let j = jobs {
            let fin = j.jobs.filter { $0.phase == "finished" }.count
            let run = j.jobs.filter { $0.phase == "running" }.count
            s += String(format: " jobs %d/%d done, %d running (trace %.1f h)", fin, j.jobs.count, run, j.traceNow / 3600)
        } else if spec.workload.kind == .idle {
            s += " idle workload"
        }
        if let r = requests, !r.services.isEmpty {
            let sub = r.services.reduce(0) { $0 + Int($1.submitted) }, done = r.services.reduce(0) { $0 + Int($1.completed) }
            let slo = r.services.reduce(0) { $0 + Int($1.withinSlo) }, ready = r.services.reduce(0) { $0 + Int($1.ready) }
            let attained: Double = sub == 0 ? 100 : Double(slo) / Double(sub) * 100
            s += " · requests \(done)/\(sub) done, " + String(format: "%.1f", attained) + "% in SLO, \(ready) replicas"
        }
        if let m = migrations, !m.migrations.isEmpty {
            let moving = m.migrations.filter { $0.state == "in-flight" || $0.state == "orphaned" }.count
            s += " · \(m.migrations.count) migrations (\(moving) moving)"
        }
        if let g = game, !g.players.isEmpty {
            var at: [String: Int] = [:]
            for p in g.players { at[p.report.place, default: 0] += 1 }
            let fps = g.players.map(\.report.fps).reduce(0, +) / Double(g.players.count)
            s += String(format: " players %d, mean FPS %.0f, at ", g.players.count, fps) + at.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                + " · \(g.switches.filter { !$0.rolledBack }.count) switches"
        }
        s += " · faults \(injector.applied)/\(spec.faults.count) applied"
        if !injector.active.isEmpty { s += " (\(injector.active.count) active)" }
        if let st = status {
            s += " · nodes \(st.nodes.filter { $0.state == .alive }.count)/\(spec.topology.nodeIDs.count) alive"
        }
        return s
    }
}
