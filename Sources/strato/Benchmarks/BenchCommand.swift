import ArgumentParser
import Experiments
import Features
import Scheduling
import Foundation

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Benchmarks that print figures.",
                                                    subcommands: [Wire.self, Control.self, DataPlaneBenchCommand.self, MigrationBenchCommand.self, TiersBenchCommand.self, GameBenchCommand.self, Twin.self, Schedule.self, Trace.self])

    struct Trace: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Events a process records and ships per second, and a workload's overhead with tracing on vs off, in one run.")
        @Option(name: .customLong("record-events"), help: "Events for the record-rate run.") var recordEvents = 1_000_000
        @Option(help: "Seconds per workload run.") var seconds: Double = 2
        @Option(help: "Off/on pairs.") var pairs = 5
        @Option(name: .customLong("step-bytes"), help: "Bytes hashed per workload step (sets the event rate: one event per step).") var stepBytes = 65_536
        func run() throws {
            Strato.bootstrapLogging()
            let r = try TraceBench.run(recordEvents: recordEvents, seconds: seconds, pairs: pairs, stepBytes: stepBytes) { print($0) }
            print(r.table)
        }
    }

    struct DataPlaneBenchCommand: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "dataplane",
            abstract: "Data-plane bulk throughput vs raw libzmq and memcpy over the same bytes, in one run.")
        @Option(name: .customLong("mib"), help: "MiB moved per run.") var mib = 512
        @Option(name: .customLong("chunk-kib"), parsing: .upToNextOption, help: "Chunk sizes in KiB (spaced or comma-separated).") var chunkKiBLists: [IntList] = [IntList([64, 256, 1024, 4096])]
        var chunkKiB: [Int] { chunkKiBLists.flattened }
        @Option(help: "Runs per chunk size (the median is shown).") var repeats = 3
        @Option(help: "Chunks in flight per transfer (the flow-control window).") var window = 8
        @Flag(help: "CURVE-encrypt the data plane (fresh keys).") var curve = false
        func run() throws {
            if let bad = chunkKiB.first(where: { !(1...16_384).contains($0) }) { throw ValidationError("--chunk-kib: \(bad) is outside 1…16384 KiB (the data plane's largest chunk is 16 MiB)") }
            guard (1...65_536).contains(mib) else { throw ValidationError("--mib: \(mib) is outside 1…65536") }
            let r = try DataPlaneBench.run(totalMiB: mib, chunkSizes: chunkKiB.map { $0 << 10 }, repeats: repeats, window: window,
                                           curve: curve) { print($0); fflush(stdout) }
            print(r.table)
        }
    }

    struct TiersBenchCommand: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "tiers",
            abstract: "The memory hosts' block store: put/get bandwidth and latency per tier (DRAM, CXL emulated, NVMe) in process and over the data plane, against memcpy, raw direct-I/O disk and raw libzmq in the same run.")
        @Option(name: .customLong("block-kib"), help: "Block size in KiB (a KV chunk or weight shard).") var blockKiB = 1024
        @Option(help: "MiB put and got per tier.") var mib = 256
        @Option(help: "Directory for the NVMe tier and the raw disk run (on the disk to measure).") var dir = ".strato/bench-tiers"
        @Option(help: "Rounds of each ceiling and its tier back to back: raw disk and NVMe, raw libzmq and the data plane (their medians are the figures).") var rounds = 3
        func run() throws {
            Strato.bootstrapLogging()
            print("tiers benchmark: \(blockKiB) KiB blocks, \(mib) MiB per tier, NVMe in \(dir)")
            guard (1...20).contains(rounds) else { throw ValidationError("--rounds must be 1…20 (got \(rounds))") }
            let f = try TiersBench.run(blockBytes: blockKiB << 10, totalBytes: mib << 20, directory: dir, rounds: rounds) { print($0); fflush(stdout) }
            try? FileManager.default.removeItem(atPath: dir)
            print("\nTIER  PUT GB/s  GET GB/s  CEILING GB/s       PUT ÷ CEIL  GET ÷ CEIL  4KiB PUT µs  4KiB GET µs")
            for r in f.rows {
                let (cw, cr, name) = r.kind == .nvme ? (f.diskWriteGBps, f.diskReadGBps, f.diskDirect ? "raw direct I/O" : "raw buffered") : (f.memcpyPutGBps, f.memcpyGetGBps, "memcpy")
                print(String(format: "%-5@ %8.2f  %8.2f  %5.2f/%5.2f %-7@ %9.2f×  %9.2f×  %11.1f  %11.1f", r.kind.rawValue as NSString, r.putGBps, r.getGBps, cw, cr,
                             (name == "memcpy" ? "memcpy" : "disk") as NSString, r.putGBps / cw, r.getGBps / cr, r.putLatencyUs, r.getLatencyUs))
            }
            print(String(format: "raw disk writes: %.2f GB/s written over the file (the NVMe put ceiling above), %.2f GB/s into it fresh (the filesystem allocating as it goes)", f.diskWriteGBps, f.diskFreshWriteGBps))
            print(String(format: "over the data plane (DRAM tier): put %.2f GB/s (%.2f× raw libzmq %.2f GB/s), get %.2f GB/s (%.2f×)", f.planePutGBps,
                         f.planePutGBps / f.rawZMQGBps, f.rawZMQGBps, f.planeGetGBps, f.planeGetGBps / f.rawZMQGBps))
            if let d = f.rows.first(where: { $0.kind == .dram }), let c = f.rows.first(where: { $0.kind == .cxl }) {
                print(String(format: "CXL vs DRAM here: get bandwidth %.2f× (D2.1: 51/70 = %.2f×), 4 KiB get latency %.2f× (D2.1 load latency: 2.54×); CXL is emulated (DRAM throttled), so these follow from the throttle", c.getGBps / d.getGBps, 51.0 / 70, c.getLatencyUs / d.getLatencyUs))
            }
            if f.nvmeRounds.count > 1 {
                func span(_ v: [Double]) -> String { String(format: "%.2f … %.2f", v.min()!, v.max()!) }
                print("NVMe: medians of \(f.nvmeRounds.count) rounds, each the raw disk then the tier; the rounds' own ratios: put "
                      + span(f.nvmeRounds.map(\.put)) + ", written behind " + span(f.nvmeRounds.map(\.behind)) + ", get " + span(f.nvmeRounds.map(\.get)))
            }
            if f.planeRounds.count > 1 {
                func span(_ v: [Double]) -> String { String(format: "%.2f … %.2f", v.min()!, v.max()!) }
                print("data plane: medians of \(f.planeRounds.count) rounds, each raw libzmq then the DRAM tier over the data plane; the rounds' own ratios: put "
                      + span(f.planeRounds.map(\.put)) + ", get " + span(f.planeRounds.map(\.get)))
            }
            let dram = f.rows.first { $0.kind == .dram }, nvme = f.rows.first { $0.kind == .nvme }
            print("targets: DRAM ≥ 0.8× memcpy in process: " + String(format: "get %.2f×, put %.2f×", (dram?.getGBps ?? 0) / f.memcpyGetGBps, (dram?.putGBps ?? 0) / f.memcpyPutGBps)
                  + String(format: "; ≥ 0.5× raw libzmq over the data plane: put %.2f×, get %.2f×", f.planePutGBps / f.rawZMQGBps, f.planeGetGBps / f.rawZMQGBps)
                  + String(format: "; NVMe ≥ 0.8× raw disk (writes: the file written over): put %.2f× (written behind as on a memory host: %.2f×), get %.2f×", (nvme?.putGBps ?? 0) / f.diskWriteGBps,
                                  f.nvmeBehindPutGBps / f.diskWriteGBps, (nvme?.getGBps ?? 0) / f.diskReadGBps))
        }
    }

    struct MigrationBenchCommand: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "migration",
            abstract: "Live, blocking and recompute migration of one request between two engines in real time: downtime per sequence length, KV as real bytes (kv_bytes_scale 1) over the data plane.")
        @Option(name: .customLong("lengths"), parsing: .upToNextOption, help: "Sequence lengths (prompt tokens; spaced or comma-separated).") var lengthLists: [IntList] = [IntList([256, 1024, 2048, 4096, 8192])]
        var lengths: [Int] { lengthLists.flattened }
        @Option(name: .customLong("downtime-budget-ms"), help: "The final stage's budget.") var budgetMs = 20.0
        @Option(help: "Live migrations per length (the median downtime is the figure; on a small box one run swings by a millisecond).") var repetitions = 9
        @Option(help: "Seed data folder (default: data/ of the repository).") var data: String?
        @Option(help: "Move this many requests at once through the agents' migration handlers (0: one at a time, per length and method).") var concurrent = 0
        @Option(help: "With --concurrent: requests that stay on the source, whose time between tokens is watched.") var neighbours = 4
        @Option(help: "With --concurrent: prompt tokens of each request.") var tokens = 2048
        func run() throws {
            let (kb, _, _) = KnowledgeImporter.seeded(dataDirectory: DataPaths.dataDirectory(data))
            guard let m = InferenceModel(kb: kb, model: "Meta-Llama-3-8B", gpuModel: "A100-80GB", tensorParallel: 1) else {
                throw ValidationError("no inference profile for Meta-Llama-3-8B on A100-80GB in the seed data")
            }
            if concurrent > 0 { try runConcurrent(kb); return }
            print("migration benchmark: Meta-Llama-3-8B on A100-80GB (emulated: Vidur's step times), time scale 1, kv_bytes_scale 1, downtime budget \(budgetMs) ms")
            guard (1...50).contains(repetitions) else { throw ValidationError("--repetitions 1…50") }
            // Both engines' caches are allocated for the longest length (2 MiB a block each side).
            if let bad = lengths.first(where: { !(16...16_384).contains($0) }) { throw ValidationError("--lengths: \(bad) is outside 16…16384 tokens") }
            let r = try MigrationBench.run(model: m, lengths: lengths, methods: MigrationMethod.allCases, downtimeBudget: budgetMs / 1000,
                                           repetitions: repetitions) { print($0); fflush(stdout) }
            func median(_ xs: [Double]) -> Double {
                let s = xs.sorted()
                guard !s.isEmpty else { return .nan }
                return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
            }
            // Each live run is compared with the bulk transfer measured just before it on the same
            // pair (the box's rate drifts by half over seconds, and a pair shares the drift); the
            // figure is the median of those ratios. The samples' median and best are stated too.
            let bulk = median(r.bulkSamples), bestBulk = r.bulkSamples.max() ?? .nan
            func pairedRatios(_ rows: [MigrationBench.Row]) -> [Double] {
                rows.compactMap { row in row.bulkBefore.flatMap { row.copySeconds > 0 && $0 > 0 ? row.payloadRate / $0 : nil } }
            }
            print("\nTOKENS  METHOD     RUNS  DOWNTIME ms (median, min–max)  STAGES  MiB MOVED  PAYLOAD GB/s (÷ bulk just before: median of runs; ÷ bulk median, ÷ best)")
            var liveMedians: [Double] = [], livePaired: [Double] = []
            for tokens in lengths {
                for method in MigrationMethod.allCases {
                    let rows = r.rows.filter { $0.tokens == tokens && $0.method == method }
                    guard !rows.isEmpty else { continue }
                    let d = rows.map(\.downtime).filter(\.isFinite)
                    let bytes = rows.map(\.bytes).reduce(0, +), secs = rows.map(\.copySeconds).reduce(0, +)
                    let rate = secs > 0 ? Double(bytes) / secs : 0
                    let paired = pairedRatios(rows)
                    if method == .live, !d.isEmpty { liveMedians.append(median(d)) }
                    if method == .live, !paired.isEmpty { livePaired.append(median(paired)) }
                    let range = d.count > 1 ? String(format: " (%.1f–%.1f)", (d.min() ?? 0) * 1000, (d.max() ?? 0) * 1000) : ""
                    let pairedText = paired.isEmpty ? "" : String(format: "%.2f×; ", median(paired))
                    print(String(format: "%6d  %-9@ %4d  %11.1f%-18@ %6.1f  %9.1f  %6.2f (%@%.2f×, %.2f×)", tokens, method.rawValue as NSString, rows.count, median(d) * 1000, range as NSString,
                                 Double(rows.map(\.stages).reduce(0, +)) / Double(rows.count), Double(bytes) / Double(rows.count) / 1_048_576, rate / 1e9,
                                 pairedText as NSString, rate / bulk, rate / bestBulk))
                }
            }
            if liveMedians.count >= 2, let lo = liveMedians.min(), let hi = liveMedians.max() {
                let worst = r.rows.filter { $0.method == .live && $0.downtime.isFinite }.map(\.downtime).max() ?? hi
                print(String(format: "live: median downtime per length %.1f–%.1f ms, worst single run %.1f ms (target ≤ 30 ms: %@); max/min of the medians %.2f over the lengths (target ≤ 1.5: %@)",
                             lo * 1000, hi * 1000, worst * 1000, worst <= 0.030 ? "met" : "NOT met", hi / max(lo, 1e-6), hi / max(lo, 1e-6) <= 1.5 ? "met" : "NOT met"))
            }
            let live = r.rows.filter { $0.method == .live }
            let livePayload = Double(live.map(\.bytes).reduce(0, +)) / max(1e-9, live.map(\.copySeconds).reduce(0, +))
            print(String(format: "bulk data plane: median %.2f GB/s of %d samples, %.2f–%.2f (best); KV path %.2f GB/s; all in this run",
                         bulk / 1e9, r.bulkSamples.count, (r.bulkSamples.min() ?? 0) / 1e9, bestBulk / 1e9, r.kvPathGBps / 1e9))
            if !live.isEmpty, let lowest = livePaired.min() {
                let all = median(pairedRatios(live))
                print(String(format: "live payload %.2f GB/s over all lengths; ÷ the bulk transfer just before each run: median %.2f× over all runs, lowest length %.2f× (target ≥ 0.8×: %@); %.2f× the bulk median, %.2f× the best sample; block size %d KiB",
                             livePayload / 1e9, all, lowest, lowest >= 0.8 ? "met" : "NOT met", livePayload / bulk, livePayload / bestBulk, r.blockBytes >> 10))
            }
        }

        func runConcurrent(_ kb: KnowledgeBase) throws {
            guard (1...64).contains(concurrent), (0...64).contains(neighbours), (16...16384).contains(tokens) else {
                throw ValidationError("--concurrent 1…64, --neighbours 0…64, --tokens 16…16384")
            }
            print("migration benchmark, \(concurrent) at once: Meta-Llama-3-8B on A100-80GB (emulated: Vidur's step times), \(tokens)-token prompts, time scale 1, kv_bytes_scale 1, live, downtime budget \(budgetMs) ms, through the agents' MigrationHandler")
            let r = try ConcurrentMigrationBench.run(kb: kb, model: "Meta-Llama-3-8B", gpuModel: "A100-80GB", concurrent: concurrent, neighbours: neighbours,
                                                     tokens: tokens, downtimeBudget: budgetMs / 1000) { print($0); fflush(stdout) }
            let bulk = r.bulk
            print("\nMIGRATION  OUTCOME  STAGES  MiB MOVED  COPY s  DOWNTIME ms")
            for row in r.rows {
                let d = r.downtimes[row.migrationID].map { $0 >= 0 ? String(format: "%.1f", $0 * 1000) : "-" } ?? "-"
                print(String(format: "%-10@ %-8@ %6d  %9.1f  %6.3f  %@", row.migrationID as NSString, row.outcome as NSString, row.stages,
                             Double(row.bytes) / 1_048_576, row.copySeconds, d as NSString))
            }
            let rate = Double(r.bytes) / max(r.wallSeconds, 1e-9)
            print(String(format: "total %.1f MiB in %.3f s: %.2f GB/s, %.2f× the bulk figure of this run (target ≥ 0.8×)", Double(r.bytes) / 1_048_576, r.wallSeconds, rate / 1e9, rate / bulk))
            if neighbours > 0 {
                print(String(format: "neighbours' time between tokens: %.3f ms before, %.3f ms during the migrations (%+.2f %%; the emulated engine's step times do not model copy interference)",
                             r.neighbourTBTBefore * 1000, r.neighbourTBTDuring * 1000, (r.neighbourTBTDuring / max(r.neighbourTBTBefore, 1e-12) - 1) * 100))
            }
        }
    }

    struct Wire: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Raw libzmq ROUTER/DEALER vs Stratolab's wrapper + envelope, in one run.")
        @Option(help: "Messages per throughput run (a round of 200,000 lasts about 0.2 s, where thread start and connection warm-up swing the figure).") var messages = 1_000_000
        @Option(help: "Round trips for latency.") var roundTrips = 20_000
        @Option(name: .customLong("telemetry-gpus"), help: "GPU entries in the heartbeat's telemetry (message size).") var telemetryGPUs = 4
        @Option(help: "Interleaved throughput rounds of the three paths; each path's median counts.") var rounds = 5
        func run() throws {
            guard (1...50).contains(rounds) else { throw ValidationError("--rounds \(rounds) must be within 1 … 50") }
            let r = try WireBench.run(messages: messages, roundTrips: roundTrips, rounds: rounds, telemetryGPUs: telemetryGPUs) { print($0); fflush(stdout) }
            print(r.table)
        }
    }

    struct Control: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Virtual agents heartbeating at the default rate against a coordinator process.")
        @Option(help: "Virtual agents.") var agents = 2000
        @Option(help: "Seconds to measure after all agents are registered.") var seconds: Double = 10
        @Option(name: .customLong("heartbeat-ms")) var heartbeatMs = 200
        func run() throws {
            let r = try ControlBench.run(agents: agents, seconds: seconds, heartbeatMs: heartbeatMs) { print($0); fflush(stdout) }
            print(r.table)
        }
    }

    struct Twin: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Digital-twin replay speed: the 960-job trace per policy, and a large cluster.")
        @Option(name: .customLong("large-gpus"), help: "GPUs of the large cluster.") var largeGPUs = 10_000
        @Option(name: .customLong("large-jobs"), help: "Jobs of the large trace.") var largeJobs = 100_000
        @Option(name: .customLong("large-policies"), help: "Policies for the large run.") var largePolicies = "fifo,hybrid"
        @Option(help: "Seed data folder.") var data: String?
        func run() throws {
            let ps = try largePolicies.split(separator: ",").map { n -> SchedulingPolicy in
                guard let p = Policies.named(String(n)) else { throw ValidationError("unknown policy '\(n)'") }
                return p
            }
            try SchedulingBench.twin(dataDirectory: DataPaths.dataDirectory(data), largeGPUs: largeGPUs, largeJobs: largeJobs, largePolicies: ps) { print($0); fflush(stdout) }
        }
    }

    struct Schedule: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Scheduling decision latency p50/p99 at 100, 1,000 and 10,000 nodes, every policy.")
        @Option(help: "Cluster sizes in nodes (comma-separated).") var sizes = "100,1000,10000"
        @Option(help: "Rounds per size and policy.") var rounds = 20
        @Option(help: "Seed data folder.") var data: String?
        func run() throws {
            try SchedulingBench.schedule(dataDirectory: DataPaths.dataDirectory(data), sizes: sizes.split(separator: ",").compactMap { Int($0) }, rounds: rounds) { print($0); fflush(stdout) }
        }
    }
}
