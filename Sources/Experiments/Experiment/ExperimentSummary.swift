import Features
import Foundation
import Protocol
import Scheduling

/// Every job accounted for: each accepted job must be in the coordinator's final list, and with
/// `end: jobs_done` every one must have finished (or failed with a stated reason).
public struct JobAccounting: Codable, Equatable {
    public var submitted = 0
    public var rejected = 0
    public var rejectedReasons: [String] = []
    public var known = 0
    public var finished = 0
    public var failed = 0
    public var unfinished = 0
    public var restartedAndFinished = 0
    public var preemptions = 0
    public var lost: [String] = []
    public var expectAllDone = false

    public init() {}

    public init(submitted: Int, rejected: [String], reply: JobsReply?, expectAllDone: Bool) {
        self.submitted = submitted
        self.rejected = rejected.count
        self.rejectedReasons = Array(rejected.prefix(20))
        self.expectAllDone = expectAllDone
        guard submitted > 0 else { return }
        guard let r = reply else {
            lost = ["(no answer from the coordinator at the end: nothing could be checked)"]
            return
        }
        known = r.jobs.count
        finished = r.jobs.filter { $0.phase == "finished" }.count
        failed = r.jobs.filter { $0.phase == "failed" }.count
        unfinished = r.jobs.count - finished - failed
        restartedAndFinished = r.jobs.filter { $0.phase == "finished" && $0.restarts > 0 }.count
        preemptions = r.jobs.reduce(0) { $0 + Int($1.preemptions) }
        let accepted = submitted - rejected.count
        if known < accepted { lost.append("\(accepted - known) accepted jobs are missing from the coordinator") }
    }

    public var ok: Bool { lost.isEmpty && (!expectAllDone || unfinished == 0) }
}

/// Every inference request accounted for: each one the coordinator accepted from the driver must
/// be in its final list, and with `end: jobs_done` each must have a result.
public struct RequestAccounting: Codable, Equatable {
    public struct Service: Codable, Equatable {
        public var id = ""
        public var submitted = 0
        public var completed = 0
        public var withinSLO = 0
        public var redispatched = 0
        public var replicaStarts = 0
        public var sloSeconds = 0.0
        public var latencyP50 = 0.0
        public var latencyP99 = 0.0
        public var capacityRPS = 0.0
        public var batch = 0
        /// Time to first token and requests' mean time between tokens (trace s); engine preemptions.
        public var ttftP50 = 0.0
        public var ttftP99 = 0.0
        public var tbtP99 = 0.0
        public var preemptions = 0
        public var tbtP50 = 0.0
        public var latencyMean = 0.0
        public var sloAttainment: Double { submitted == 0 ? 1 : Double(withinSLO) / Double(submitted) }
    }
    /// Generated and sent by the driver (accepted by the coordinator, duplicates counted once).
    public var generated = 0
    public var accepted = 0
    public var rejected: [String] = []
    public var known = 0
    public var completed = 0
    public var withinSLO = 0
    public var services: [Service] = []
    public var lost: [String] = []
    public var expectAllDone = false
    /// What replicas held of each KV block as real bytes (emulation).
    public var kvBytesScale = 0.0
    /// Output tokens of finished requests per trace second, first arrival to last finish.
    public var outputTokensPerSecond: Double?

    public init() {}

    public init(generated: Int, accepted: Int, rejected: [String], reply: RequestsReply?, expectAllDone: Bool) {
        self.generated = generated
        self.accepted = accepted
        self.rejected = Array(rejected.prefix(20))
        self.expectAllDone = expectAllDone
        guard generated > 0 else { return }
        guard let r = reply else { lost = ["(no answer from the coordinator at the end: nothing could be checked)"]; return }
        kvBytesScale = r.kvBytesScale
        for s in r.services {
            services.append(Service(id: s.serviceID, submitted: Int(s.submitted), completed: Int(s.completed), withinSLO: Int(s.withinSlo),
                                    redispatched: Int(s.redispatched), replicaStarts: Int(s.replicaStarts), sloSeconds: s.sloSeconds,
                                    latencyP50: s.latencyP50, latencyP99: s.latencyP99, capacityRPS: s.capacityRps, batch: Int(s.batch),
                                    ttftP50: s.ttftP50, ttftP99: s.ttftP99, tbtP99: s.tbtP99, preemptions: Int(s.preemptions),
                                    tbtP50: s.tbtP50, latencyMean: s.latencyMean))
        }
        let done = r.requests.filter { $0.finished >= 0 }
        if let first = r.requests.map(\.arrival).min(), let last = done.map(\.finished).max(), last > first {
            outputTokensPerSecond = Double(done.reduce(0) { $0 + Int($1.decodeTokens) }) / (last - first)
        }
        known = services.reduce(0) { $0 + $1.submitted }
        completed = services.reduce(0) { $0 + $1.completed }
        withinSLO = services.reduce(0) { $0 + $1.withinSLO }
        if known < accepted { lost.append("\(accepted - known) accepted requests are missing from the coordinator") }
        if generated > accepted + rejected.count { lost.append("\(generated - accepted - rejected.count) generated requests were never accepted") }
    }

    public var unfinished: Int { known - completed }
    public var sloAttainment: Double { known == 0 ? 1 : Double(withinSLO) / Double(known) }
    public var ok: Bool { lost.isEmpty && (!expectAllDone || unfinished == 0) }
}

/// Every migration accounted for: started, and ended one way or another (done, aborted with a
/// reason, resumed from a partial copy); none left in flight or orphaned at the end.
public struct MigrationAccounting: Codable, Equatable {
    public struct Sample: Codable, Equatable {
        public var id = ""
        public var tokens = 0
        /// The extra stall the request saw (trace ms); nil when unknown (aborted, or no token after it).
        public var downtimeMs: Double?
        public var method = ""
        public var reason = ""
        public var state = ""
        public var stages = 0
        public var bytes: UInt64 = 0
        public var from = ""
        public var to = ""
        public var started = 0.0
        public var ended = 0.0
        /// Its KV went through a memory host: the downtime includes the wait for room.
        public var staged: Bool? = nil
        /// Why it ended as it did, when not plainly done (an abort's cause, as the source said it).
        public var detail: String? = nil
        /// The request it moved.
        public var request: String? = nil
    }
    public var policy = ""
    public var method = ""
    public var started = 0
    public var byState: [String: Int] = [:]
    public var byReason: [String: Int] = [:]
    public var samples: [Sample] = []
    /// Migrations still in flight or orphaned when the run ended.
    public var unfinished: [String] = []
    public var notes: [String] = []
    public var downtimeP50Ms: Double?
    public var downtimeP99Ms: Double?
    public var bytesMoved: UInt64 = 0
    /// Migrations staged through a memory host, and the median stall they saw (waiting for room
    /// on the destination; not among the downtime percentiles above, which are the copy's).
    public var staged = 0
    public var stagedStallP50Ms: Double?
    /// Whether the coordinator answered for migrations at the end.
    public var known = false

    public init() {}

    public init(_ r: MigrationApiReply?) {
        guard let r else { return }
        known = true
        policy = r.policy; method = r.method; notes = r.notes
        for m in r.migrations {
            started += 1
            byState[m.state, default: 0] += 1
            byReason[m.reason, default: 0] += 1
            bytesMoved += m.bytes
            if m.state == "in-flight" || m.state == "orphaned" { unfinished.append(m.migrationID) }
            samples.append(Sample(id: m.migrationID, tokens: Int(m.tokens), downtimeMs: m.downtimeSeconds >= 0 ? m.downtimeSeconds * 1000 : nil,
                                  method: m.method, reason: m.reason, state: m.state, stages: Int(m.stages), bytes: m.bytes,
                                  from: m.fromNode, to: m.toNode, started: m.started, ended: m.ended, staged: m.staged ? true : nil,
                                  detail: m.detail.isEmpty ? nil : m.detail, request: m.requestID))
            if m.staged { staged += 1 }
        }
        let d = samples.filter { $0.staged != true }.compactMap(\.downtimeMs).sorted()
        if !d.isEmpty { downtimeP50Ms = percentile(d, 50); downtimeP99Ms = percentile(d, 99) }
        let w = samples.filter { $0.staged == true }.compactMap(\.downtimeMs).sorted()
        if !w.isEmpty { stagedStallP50Ms = percentile(w, 50) }
    }

    public var ok: Bool { unfinished.isEmpty }
}

/// What one run produced, as `summary.json`, and the lost-nothing check over it.
/// KV prefix reuse through the memory hosts' tiers, from the coordinator's tiers reply at the end.
public struct OffloadAccounting: Codable, Equatable {
    public var known = false
    public var lookups = 0, hits = 0, hitTokens = 0, promptTokens = 0
    public var loadedBytes = 0, storedBytes = 0, storedChunks = 0, fallbacks = 0
    public var loadSeconds = 0.0
    public var loadedByTier: [String: Int] = [:]
    public var storedByTier: [String: Int] = [:]
    public var decisions: [String: Int] = [:]
    /// Per memory host and tier: used bytes, hits, evictions, demotions (hosts' own figures).
    public var hostTiers: [String] = []
    public var kvBytesScale = 0.0
    /// Replicas whose model did not fit their GPUs: where the offloaded layers lived and what
    /// streaming them cost (nil in runs from before weight offload).
    public struct WeightStream: Codable, Equatable {
        public var node = "", replica = "", model = "", host = "", tier = "", state = "", reason = ""
        public var residentLayers = 0, offloadedLayers = 0
        public var gbPerStep = 0.0, streamSeconds = 0.0
        public var steps = 0, rounds = 0, bytesStreamed = 0, reputs = 0, failures = 0
        public var roundSeconds = 0.0, stalledSeconds = 0.0, bytesScale = 0.0
    }
    public var weights: [WeightStream]?
    /// KV of preempted requests swapped to memory hosts and back (nil in runs from before).
    public struct Swaps: Codable, Equatable {
        public var outs = 0, ins = 0, fallbacks = 0, declined = 0, bytesOut = 0, bytesIn = 0
        public var seconds = 0.0
    }
    public var swaps: Swaps?
    /// Each memory host tier's probed figures: "host/kind" → [GB/s, ns] (nil in runs from before).
    public var figures: [String: [Double]]?
    /// Requests served from the replicas' own GPU prefix caches, tokens skipped, their prompt
    /// tokens; requests routed by prefix (nil in runs from before).
    public var gpuHits: Int?, gpuHitTokens: Int?, gpuPromptTokens: Int?, prefixRouted: Int?
    public init() {}
    public init(_ reply: TiersApiReply?) {
        guard let reply else { return }
        known = true
        if reply.prefixRouting { prefixRouted = Int(reply.prefixRouted) }
        for g in reply.gpus {
            let st = g.stats
            lookups += Int(st.lookups); hits += Int(st.hits); hitTokens += Int(st.hitTokens); promptTokens += Int(st.promptTokens)
            loadedBytes += Int(st.loadedBytes); storedBytes += Int(st.storedBytes); storedChunks += Int(st.storedChunks); fallbacks += Int(st.fallbacks)
            loadSeconds += st.loadSeconds
            if st.gpuHits > 0 {
                gpuHits = (gpuHits ?? 0) + Int(st.gpuHits); gpuHitTokens = (gpuHitTokens ?? 0) + Int(st.gpuHitTokens)
                gpuPromptTokens = (gpuPromptTokens ?? 0) + Int(st.gpuPromptTokens)
            }
            for (k, v) in st.loadedByTier { loadedByTier[k, default: 0] += Int(v) }
            for (k, v) in st.storedByTier { storedByTier[k, default: 0] += Int(v) }
            for (k, v) in st.decisions { decisions[k, default: 0] += Int(v) }
            if st.swapOuts + st.swapFallbacks + st.swapDeclined > 0 {
                var w = swaps ?? Swaps()
                w.outs += Int(st.swapOuts); w.ins += Int(st.swapIns); w.fallbacks += Int(st.swapFallbacks); w.declined += Int(st.swapDeclined)
                w.bytesOut += Int(st.swapBytesOut); w.bytesIn += Int(st.swapBytesIn); w.seconds += st.swapSeconds
                swaps = w
            }
            for w in st.weights {
                weights = (weights ?? []) + [WeightStream(node: g.node, replica: w.replicaID, model: w.model, host: w.host, tier: w.tier, state: w.state, reason: w.reason,
                                                          residentLayers: Int(w.residentLayers), offloadedLayers: Int(w.offloadedLayers),
                                                          gbPerStep: w.bytesPerStep / 1e9, streamSeconds: w.streamSeconds, steps: Int(w.steps), rounds: Int(w.rounds),
                                                          bytesStreamed: Int(w.bytesStreamed), reputs: Int(w.reputs), failures: Int(w.failures),
                                                          roundSeconds: w.roundSeconds, stalledSeconds: w.stalledSeconds, bytesScale: w.bytesScale)]
            }
        }
        for h in reply.hosts {
            let errors = h.stats.errors.filter { $0.value > 0 }.sorted { $0.key < $1.key }
            if !errors.isEmpty { hostTiers.append("\(h.node) refused or dropped, by named error: " + errors.map { "\($0.key) \($0.value)" }.joined(separator: ", ")) }
            for t in h.stats.tiers where t.probedBandwidthGbps > 0 { figures = (figures ?? [:]).merging(["\(h.node)/\(t.kind)": [t.probedBandwidthGbps, t.probedLatencyNs]]) { $1 } }
            for t in h.stats.tiers {
                hostTiers.append("\(h.node) \(t.kind)\(t.emulated ? " (emulated)" : ""): \(String(format: "%.1f", Double(t.usedBytes) / 1_048_576)) MiB used, \(t.blocks) blocks, \(t.hits) hits, \(t.evictions) evictions, \(t.demotions) demotions, \(t.promotions) promotions")
            }
        }
    }
    /// Share of prompt tokens whose KV came from a tier instead of prefill.
    public var hitRatio: Double {
        let prompt = promptTokens + (gpuPromptTokens ?? 0)
        return prompt > 0 ? Double(hitTokens + (gpuHitTokens ?? 0)) / Double(prompt) : 0
    }
    /// Requests with prefix keys, wherever their prefix came from.
    public var prefixRequests: Int { lookups + (gpuHits ?? 0) }
}

public struct ExperimentSummary: Codable {
    public var name: String
    public var seed: UInt64
    public var platform: String
    public var startedAt: Date
    public var emulated = true
    public var workload = ""
    public var policy = ""
    public var timeScale = 1.0
    public var endReason = ""
    public var secondsToAlive = 0.0
    public var workloadSeconds = 0.0
    public var nodesTotal = 0
    /// Processes that must appear in the trace: the coordinator and one per topology node.
    public var expectedProcesses: [String] = []
    public var nodesAliveAtEnd = 0
    public var faultsApplied = 0
    public var faultsHealed = 0
    public var faultLog: [String] = []
    public var faultWindows: [MergedTrace.FaultWindow] = []
    public var jobs = JobAccounting()
    public var requests = RequestAccounting()
    /// The live-migration policy of this run, and what its migrations did.
    public var migrationPolicy = ""
    public var migrations = MigrationAccounting()
    /// The memory-tier offload policy of this run, and what prefix reuse did.
    public var offloadPolicy = ""
    public var offload = OffloadAccounting()
    /// A game run's players, switches and world (nil for other workloads and older runs).
    public var game: GameAccounting?
    /// The longest a player may go without frames: the failure detector's dead time.
    public var gameMaxGapMs: Double?
    /// What this run's policy comparison varies: "migration" or "offload".
    public var variantKind = "migration"
    /// The policy that names this run in a comparison.
    public var variantLabel: String {
        let p = variantKind == "offload" ? offloadPolicy : migrationPolicy
        return p.isEmpty ? "-" : p
    }
    public var meanJCTHours: Double?
    public var p99JCTHours: Double?
    public var makespanHours: Double?
    public var trace = TraceAccounting()
    public var problems: [String] = []
    public var lostNothing = LostNothingCheck()

    public init(name: String, seed: UInt64, platform: String, startedAt: Date) {
        self.name = name; self.seed = seed; self.platform = platform; self.startedAt = startedAt
    }

    public struct TraceAccounting: Codable, Equatable {
        public var events = 0
        public var processes: [String] = []
        public var instances = 0
        public var missingEvents: UInt64 = 0
        public var fromSpoolOnly = 0
        public var duplicatesDropped = 0
        public var flows = 0
        public var counters = 0
        public var truncatedFiles: [String] = []
        public var nodesWithoutTrace: [String] = []
        public var maxClockErrorMs: Double?
        public init() {}
    }

    public struct LostNothingCheck: Codable, Equatable {
        public var ok = false
        public var lines: [String] = []
        public init() {}
        public init(ok: Bool, lines: [String]) { self.ok = ok; self.lines = lines }
    }

    /// Jobs, requests and measurements, each accounted for.
    public mutating func check() {
        var lines: [String] = [], ok = true
        if jobs.submitted == 0 {
            lines.append("jobs: none in this workload")
        } else {
            let j = jobs
            var line = "jobs: \(j.submitted) submitted, \(j.rejected) rejected (named), \(j.known) known to the coordinator: \(j.finished) finished (\(j.restartedAndFinished) after a restart), \(j.failed) failed with a reason, \(j.unfinished) unfinished"
            if !j.lost.isEmpty { line += " — LOST: " + j.lost.joined(separator: "; "); ok = false }
            else if j.expectAllDone && j.unfinished > 0 { line += " — NOT all done before the duration limit"; ok = false }
            lines.append(line)
        }
        if requests.generated == 0 {
            lines.append("requests: none in this workload")
        } else {
            let r = requests
            var line = "requests: \(r.generated) generated, \(r.accepted) accepted, \(r.rejected.count) rejected (named), \(r.known) known to the coordinator: \(r.completed) completed (\(r.withinSLO) within their SLO, \(String(format: "%.1f", r.sloAttainment * 100)) %), \(r.services.reduce(0) { $0 + $1.redispatched }) sent again after a replica was lost, \(r.unfinished) unfinished"
            if !r.lost.isEmpty { line += " — LOST: " + r.lost.joined(separator: "; "); ok = false }
            else if r.expectAllDone && r.unfinished > 0 { line += " — NOT all done before the duration limit"; ok = false }
            lines.append(line)
        }
        if migrations.known && (migrations.started > 0 || migrationPolicy != "none") {
            let g = migrations
            let states = g.byState.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
            var line = "migrations (policy \(migrationPolicy), \(g.method)): \(g.started) started" + (states.isEmpty ? "" : ": " + states)
                + ", \(g.unfinished.count) in flight or orphaned at the end"
            if !g.ok { line += " — STUCK: " + g.unfinished.prefix(10).joined(separator: ", "); ok = false }
            lines.append(line)
        }
        var m = "measurements: \(trace.events) trace events from \(trace.instances) process instances, \(trace.missingEvents) missing (sequence gaps), \(trace.fromSpoolOnly) recovered from local spools"
        if trace.missingEvents > 0 { ok = false; m += " — MISSING" }
        if !trace.nodesWithoutTrace.isEmpty { ok = false; m += " — no trace from \(trace.nodesWithoutTrace.joined(separator: ", "))" }
        lines.append(m)
        if let g = game {
            let c = g.lostNothing(maxGapMs: gameMaxGapMs ?? 2000)
            lines += c.lines
            if !c.ok { ok = false }
        }
        if !problems.isEmpty { ok = false; lines.append("problems: " + problems.joined(separator: "; ")) }
        lostNothing = LostNothingCheck(ok: ok, lines: lines)
    }

    static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        e.dateEncodingStrategy = .iso8601
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return e
    }

    public func save(to dir: String) throws {
        try ExperimentSummary.encoder.encode(self).write(to: URL(fileURLWithPath: dir + "/summary.json"))
    }

    public static func load(from dir: String) throws -> ExperimentSummary {
        guard let data = FileManager.default.contents(atPath: dir + "/summary.json") else {
            throw SpecError(file: dir + "/summary.json", line: 0, field: "(file)", message: "no summary.json: is this an experiment results folder?")
        }
        return try decoder.decode(ExperimentSummary.self, from: data)
    }

    /// Every run's summary of a folder of several runs (as `writeAll` leaves it); nil when the
    /// folder holds one run's summary or none.
    public static func loadAll(from dir: String) -> [ExperimentSummary]? {
        guard let data = FileManager.default.contents(atPath: dir + "/summary.json") else { return nil }
        return try? decoder.decode([ExperimentSummary].self, from: data)
    }

    static var decoder: JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return d
    }

    public static func writeAll(_ all: [ExperimentSummary], to dir: String) throws {
        try encoder.encode(all).write(to: URL(fileURLWithPath: dir + "/summary.json"))
        try table(all).write(toFile: dir + "/summary.txt", atomically: true, encoding: .utf8)
    }

    /// The table printed at the end of a run.
    public static func table(_ all: [ExperimentSummary]) -> String {
        func h(_ x: Double?) -> String { x.map { $0.isFinite ? String(format: "%.2f", $0) : "-" } ?? "-" }
        let showMigration = all.contains { !$0.migrationPolicy.isEmpty && ($0.migrationPolicy != "none" || $0.migrations.started > 0 || all.count > 1) }
        var rows: [[String]] = [["run", "seed", "on", "end", "wall s", "alive", "faults", "jobs done", "restarted", "mean JCT h", "p99 JCT h", "requests done", "SLO", "trace events", "missing", "lost nothing"]]
        if showMigration { rows[0].insert(contentsOf: ["migration", "moved"], at: 3) }
        for (i, s) in all.enumerated() {
            rows.append(["\(i + 1)", "\(s.seed)", s.platform, s.endReason, String(format: "%.1f", s.workloadSeconds),
                         "\(s.nodesAliveAtEnd)/\(s.nodesTotal)", "\(s.faultsApplied)/\(s.faultsHealed) healed",
                         s.jobs.submitted == 0 ? "-" : "\(s.jobs.finished)/\(s.jobs.submitted - s.jobs.rejected)", s.jobs.submitted == 0 ? "-" : "\(s.jobs.restartedAndFinished)",
                         h(s.meanJCTHours), h(s.p99JCTHours),
                         s.requests.generated == 0 ? "-" : "\(s.requests.completed)/\(s.requests.accepted)",
                         s.requests.generated == 0 ? "-" : String(format: "%.1f%%", s.requests.sloAttainment * 100), "\(s.trace.events)", "\(s.trace.missingEvents)", s.lostNothing.ok ? "yes" : "NO"])
            if showMigration { rows[rows.count - 1].insert(contentsOf: [s.migrationPolicy.isEmpty ? "-" : s.migrationPolicy, "\(s.migrations.byState["done", default: 0] + s.migrations.byState["resumed-partial", default: 0])"], at: 3) }
        }
        let widths = rows[0].indices.map { c in rows.map { $0[c].count }.max() ?? 0 }
        var out = rows.map { r in r.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "  ") }
        out.insert(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "), at: 1)
        for (i, s) in all.enumerated() {
            if !s.requests.services.isEmpty {
                out.append("")
                out.append("run \(i + 1) services (latency in trace seconds, from arrival to last token; replicas emulated, KV blocks held as real bytes at kv_bytes_scale "
                           + (s.requests.kvBytesScale > 0 ? String(format: "1/%.0f", 1 / s.requests.kvBytesScale) : "0") + "):")
                for v in s.requests.services {
                    out.append("  \(v.id): \(v.completed)/\(v.submitted) done, " + String(format: "%.1f%%", v.sloAttainment * 100) + " within the \(fmt(v.sloSeconds)) s SLO, "
                               + String(format: "p50 %.2f s, p99 %.2f s, TTFT p50 %.2f s p99 %.2f s, TBT p99 %.0f ms", v.latencyP50, v.latencyP99, v.ttftP50, v.ttftP99, v.tbtP99 * 1000)
                               + String(format: ", TBT p50 %.0f ms", v.tbtP50 * 1000)
                               + (v.preemptions > 0 ? ", \(v.preemptions) engine preemptions" : "")
                               + ", \(v.redispatched) sent again, \(v.replicaStarts) replica starts, " + String(format: "%.2f req/s per replica (batch %d)", v.capacityRPS, v.batch))
                }
            }
            if s.offload.known && s.offload.prefixRequests > 0 {
                let o = s.offload
                out.append("run \(i + 1) KV prefixes (offload policy \(s.offloadPolicy)): \(o.gpuHits ?? 0) requests found theirs in their GPU's prefix cache, \(o.hits)/\(o.lookups) of the rest loaded one from a memory tier"
                           + (o.prefixRouted.map { ", \($0) routed to the replica holding their prefix" } ?? "") + ", together "
                           + String(format: "%.1f%% of prompt tokens", o.hitRatio * 100)
                           + String(format: " · %.1f MiB loaded, %.1f MiB stored (at kv_bytes_scale)", Double(o.loadedBytes) / 1_048_576, Double(o.storedBytes) / 1_048_576)
                           + " · \(o.fallbacks) fell back to prefill · "
                           + o.decisions.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
                for h in o.hostTiers { out.append("    \(h)") }
            }
            if let w = s.offload.swaps {
                out.append("run \(i + 1) KV swap to memory hosts: \(w.outs) preempted requests swapped out, \(w.ins) back in"
                           + String(format: " (%.1f MiB out, %.1f MiB in at kv_bytes_scale, %.2f s modelled)", Double(w.bytesOut) / 1_048_576, Double(w.bytesIn) / 1_048_576, w.seconds)
                           + ", \(w.fallbacks) recomputed after losing their KV, \(w.declined) recomputed by the policy's choice")
            }
            for w in s.offload.weights ?? [] {
                out.append("run \(i + 1) weights of \(w.replica) on \(w.node) (\(w.model)): \(w.offloadedLayers) of \(w.residentLayers + w.offloadedLayers) layers streamed from "
                           + (w.host.isEmpty ? "no host (\(w.state))" : "\(w.host) \(w.tier)") + String(format: ", %.1f GB a step in %.3f s (modelled), %d steps, %d rounds of real bytes (%.1f MiB at scale 1/%.0f), %.1f s stalled",
                                                                  w.gbPerStep, w.streamSeconds, w.steps, w.rounds, Double(w.bytesStreamed) / 1_048_576, w.bytesScale > 0 ? 1 / w.bytesScale : 0, w.stalledSeconds)
                           + (s.requests.outputTokensPerSecond.map { String(format: ", %.2f output tokens/s", $0) } ?? ""))
            }
            if s.migrations.started > 0 {
                let g = s.migrations
                out.append("run \(i + 1) migrations (\(s.migrationPolicy), \(g.method)): \(g.started) started · "
                           + g.byReason.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ") + " · "
                           + g.byState.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
                           + (g.downtimeP50Ms.map { String(format: " · downtime p50 %.1f ms, p99 %.1f ms", $0, g.downtimeP99Ms ?? 0) } ?? "")
                           + (g.staged > 0 ? " · \(g.staged) staged through a memory host" + (g.stagedStallP50Ms.map { String(format: " (stall waiting for room p50 %.0f ms)", $0) } ?? "") : "")
                           + String(format: " · %.1f MiB of KV moved", Double(g.bytesMoved) / 1_048_576))
            }
            if let g = s.game { out += GameSection.text(g).map { "run \(i + 1) " + $0 } }
            out.append("")
            out.append("run \(i + 1) lost-nothing check: \(s.lostNothing.ok ? "PASSED" : "FAILED")")
            out += s.lostNothing.lines.map { "  - " + $0 }
        }
        if all.contains(where: \.emulated) { out.append("(GPUs and job execution are emulated from published measurements)") }
        return out.joined(separator: "\n")
    }
}
