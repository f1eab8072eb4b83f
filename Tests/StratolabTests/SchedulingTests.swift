import Foundation
import Scheduling
import Twin
import Testing

// Knowledge base import and estimation, the seven policies on hand-made clusters with known best
// answers, scheduler invariants under random operations, the trace generator and the twin.

/// The repository's data folder (tests run from the package root).
let dataDir = FileManager.default.currentDirectoryPath + "/data"

/// Vidur's Llama-2-7B profile on the A100 (and the estimates for the 80 GB part): the knowledge
/// the inference tests serve from.
let llamaA100KB: KnowledgeBase = {
    let r = KnowledgeImporter.importFile(dataDir + "/profiles/vidur/a100_Llama-2-7b-hf_mlp.csv")
    var kb = KnowledgeBase(rows: r.rows)
    _ = Estimator.estimateMissing(in: &kb, gpuModels: ["A100-80GB"])
    return kb
}()
let llamaA100 = InferenceModel(kb: llamaA100KB, model: "Llama-2-7b", gpuModel: "A100-80GB", tensorParallel: 1)!

func row(_ model: String, _ gpu: String, _ n: Int, _ thr: Double, fits: Bool = true, task: String = "train") -> PerfRow {
    PerfRow(key: ConfigKey(model: model, task: task, gpuModel: gpu, gpuCount: n, batchPerGPU: 8), throughput: thr, unit: "steps/s",
            stepTime: thr > 0 ? 1 / thr : nil, fits: fits, origin: .measured, source: "test")
}

func job(_ id: String, _ model: String, gpus: Int, gpuModel: String? = nil, work: Double = 1000, arrival: Double = 0) -> JobSpec {
    JobSpec(id: id, kind: JobKind(model: model, task: "train", batchPerGPU: 8), arrival: arrival, requestedGPUModel: gpuModel,
            requestedGPUs: gpus, work: work, unit: "steps/s")
}

func schedule(_ policy: SchedulingPolicy, nodes: [NodeSlot], jobs: [JobSpec], kb: KnowledgeBase) -> [JobDecision] {
    var s = Scheduler(policy: policy, kb: kb)
    for n in nodes { s.state.addNode(n) }
    for j in jobs { s.state.submit(j) }
    let actions = s.step(now: 0)
    #expect(s.state.invariantViolations().isEmpty)
    #expect(s.rejectedDecisions.isEmpty)
    return actions.compactMap {
        if case .startJob(let id, let p, _) = $0 { return JobDecision(jobID: id, nodeID: p.nodeID, key: p.key) }
        return nil
    }
}

@Suite("Knowledge base")
struct KnowledgeTests {
    @Test("VectorLM's table imports with its figures and its out-of-memory cells")
    func vectorLM() {
        let r = KnowledgeImporter.importFile(dataDir + "/training/vectorlm-llm-finetune-throughput.md")
        #expect(r.skipped.isEmpty)
        let kb = KnowledgeBase(rows: r.rows)
        let a100 = kb.offline[ConfigKey(model: "Llama-2-13b", task: "finetune-full", gpuModel: "A100-80GB", gpuCount: 1, batchPerGPU: 8)]
        #expect(a100?.throughput == 424.726 && a100?.fits == true && a100?.origin == .measured)
        let t4 = kb.offline[ConfigKey(model: "Llama-2-7b", task: "finetune-full", gpuModel: "T4", gpuCount: 1, batchPerGPU: 8)]
        #expect(t4?.fits == false)
        #expect(r.rows.count == 20 * 6)
    }

    @Test("a bad VectorLM row is skipped with its line and column")
    func vectorLMBadRow() {
        let text = "| | m1 | m2 |\n| :-- | --: | --: |\n| (lora) Tesla T4 x1 | 12.5 | oops |\n| (lora) Z9000 x1 | 1 | 2 |\n"
        let r = VectorLMReader.read(text, file: "t.md")
        #expect(r.rows.count == 1)
        #expect(r.skipped.map(\.description) == ["t.md:3: m2: 'oops' is not a positive number or nan",
                                                  "t.md:4: configuration: cannot read '(lora) Z9000 x1' (expected '(full_rank|lora) GPU xN')"])
    }

    @Test("Gavel's throughputs import alone and co-located; job keys parse")
    func gavel() throws {
        #expect(GavelThroughputReader.parseJobKey("('ResNet-18 (batch size 16)', 4)")! == ("ResNet-18", 16, 4))
        #expect(GavelThroughputReader.parseJobKey("ResNet-18") == nil)
        let r = KnowledgeImporter.importFile(dataDir + "/training/gavel/simulation_throughputs.json")
        #expect(r.rows.count > 400)
        #expect(r.rows.contains { $0.key.layout == "spread" })
        let slow = try #require(r.facts.first { $0.name == "colocation_slowdown" && $0.gpuModel == "V100" })
        #expect(slow.value > 0.2 && slow.value < 1)
    }

    @Test("a Vidur profile without a needed column is refused, naming the column")
    func vidurMissingColumn() {
        let r = VidurProfileReader.read("num_tokens,num_tensor_parallel_workers\n1,1\n", file: "/x/a100_Llama-2-7b-hf_mlp.csv")
        #expect(r.rows.isEmpty)
        #expect(r.skipped.first?.field.contains("time_stats.emb.mean") == true)
        #expect(r.skipped.first?.message == "missing column(s)")
    }

    @Test("Vidur profiles give iteration times that grow with tokens")
    func vidur() throws {
        let r = KnowledgeImporter.importFile(dataDir + "/profiles/vidur/a100_Llama-2-7b-hf_mlp.csv")
        #expect(r.skipped.isEmpty)
        let kb = KnowledgeBase(rows: r.rows)
        let m = try #require(InferenceModel(kb: kb, model: "Llama-2-7b-hf", gpuModel: "A100-80GB", tensorParallel: 1))
        #expect(m.iteration(tokens: 4096) > m.iteration(tokens: 64))
        let op = try #require(m.operatingPoint(prefill: 1000, decode: 200, slo: 20))
        #expect(op.requestsPerSecond > 0 && op.latencySeconds <= 20)
    }

    @Test("missing GPU types are estimated, marked, and memory fit follows the measured rows")
    func estimates() {
        let r = KnowledgeImporter.importAll(dataDirectory: dataDir)
        var kb = KnowledgeBase(rows: r.rows, facts: r.facts)
        let n = Estimator.estimateMissing(in: &kb, gpuModels: ["V100", "A100-40GB", "A100-80GB"])
        #expect(n > 100)
        // Measured A100-80GB ×1 fits; A40 (48 GB) ×1 did not: the 40 GB A100 is estimated not to fit.
        let k40 = ConfigKey(model: "Llama-2-13b", task: "finetune-full", gpuModel: "A100-40GB", gpuCount: 1, batchPerGPU: 8)
        #expect(kb.offline[k40]?.origin == .estimated && kb.offline[k40]?.fits == false)
        // 8 A100s were never measured: scaled from 4 and marked.
        let k8 = ConfigKey(model: "Llama-2-7b", task: "finetune-lora", gpuModel: "A100-80GB", gpuCount: 8, batchPerGPU: 8)
        let four = kb.offline[ConfigKey(model: "Llama-2-7b", task: "finetune-lora", gpuModel: "A100-80GB", gpuCount: 4, batchPerGPU: 8)]!
        #expect(kb.offline[k8]?.origin == .estimated)
        #expect((kb.offline[k8]?.throughput ?? 0) > four.throughput)
        // A measured row is never replaced by an estimate.
        #expect(four.origin == .measured)
    }

    @Test("online rows learn an exponentially weighted rate beside the offline ones")
    func online() {
        var kb = KnowledgeBase(rows: [row("m", "T4", 1, 10)])
        let k = ConfigKey(model: "m", task: "train", gpuModel: "T4", gpuCount: 1, batchPerGPU: 8)
        kb.recordOnline(k, throughput: 20, unit: "steps/s", stepTime: nil)
        kb.recordOnline(k, throughput: 10, unit: "steps/s", stepTime: nil)
        #expect(kb.online[k]!.samples == 2)
        #expect(abs(kb.online[k]!.throughput - 17) < 1e-9)
        #expect(kb.offline[k]!.throughput == 10)
    }
}

@Suite("Policies")
struct PolicyTests {
    let kb = KnowledgeBase(rows: [
        row("a", "V100", 1, 10), row("a", "V100", 2, 12), row("a", "T4", 1, 5), row("a", "T4", 2, 9),
        row("big", "T4", 1, 0, fits: false), row("big", "T4", 2, 0, fits: false), row("big", "V100", 1, 4), row("big", "V100", 2, 8),
    ])

    @Test("fifo runs the configuration asked for and blocks behind a head that cannot start")
    func fifo() {
        let d = schedule(FIFOPolicy(), nodes: [NodeSlot(id: "t4", gpuModel: "T4", gpuCount: 2)],
                         jobs: [job("j1", "a", gpus: 4, gpuModel: "T4"), job("j2", "a", gpus: 1, gpuModel: "T4", arrival: 1)], kb: kb)
        #expect(d.isEmpty)
        let d2 = schedule(FIFOPolicy(), nodes: [NodeSlot(id: "t4", gpuModel: "T4", gpuCount: 2), NodeSlot(id: "v", gpuModel: "V100", gpuCount: 2)],
                          jobs: [job("j1", "a", gpus: 2, gpuModel: "T4")], kb: kb)
        #expect(d2 == [JobDecision(jobID: "j1", nodeID: "t4", key: ConfigKey(model: "a", task: "train", gpuModel: "T4", gpuCount: 2, batchPerGPU: 8))])
    }

    @Test("db-fifo takes the fastest free configuration within the GPUs asked for")
    func dbFIFO() {
        let d = schedule(DBFIFOPolicy(), nodes: [NodeSlot(id: "t4", gpuModel: "T4", gpuCount: 2), NodeSlot(id: "v", gpuModel: "V100", gpuCount: 2)],
                         jobs: [job("j1", "a", gpus: 2, gpuModel: "T4")], kb: kb)
        #expect(d.map(\.key.gpuModel) == ["V100"] && d.map(\.key.gpuCount) == [2])
    }

    @Test("db-flat packs by efficiency: one V100 (10/GPU) beats two (6/GPU), and both jobs run")
    func dbFlat() {
        let d = schedule(DBFlatPolicy(), nodes: [NodeSlot(id: "v", gpuModel: "V100", gpuCount: 2)],
                         jobs: [job("j1", "a", gpus: 2), job("j2", "a", gpus: 2, arrival: 1)], kb: kb)
        #expect(d.count == 2 && d.allSatisfy { $0.key.gpuCount == 1 && $0.key.gpuModel == "V100" })
    }

    @Test("db-flat-scale grows a lone job onto idle GPUs while throughput still grows")
    func dbFlatScale() {
        let d = schedule(DBFlatScalePolicy(), nodes: [NodeSlot(id: "v", gpuModel: "V100", gpuCount: 2)], jobs: [job("j1", "a", gpus: 2)], kb: kb)
        #expect(d.map(\.key.gpuCount) == [2])
        let flat = schedule(DBFlatPolicy(), nodes: [NodeSlot(id: "v", gpuModel: "V100", gpuCount: 2)], jobs: [job("j1", "a", gpus: 2)], kb: kb)
        #expect(flat.map(\.key.gpuCount) == [1])
    }

    @Test("informed policies never place a configuration the knowledge base says does not fit")
    func fit() {
        for p in [DBFIFOPolicy(), DBFlatPolicy(), DBFlatScalePolicy(), HybridPolicy(), SiaPolicy(aware: true)] as [SchedulingPolicy] {
            let d = schedule(p, nodes: [NodeSlot(id: "t4", gpuModel: "T4", gpuCount: 4)], jobs: [job("j1", "big", gpus: 2)], kb: kb)
            #expect(d.isEmpty, "\(p.name)")
        }
        // Uninformed exploration may try it (and learn from the failure).
        let u = schedule(SiaPolicy(aware: false), nodes: [NodeSlot(id: "t4", gpuModel: "T4", gpuCount: 4)], jobs: [job("j1", "big", gpus: 2)], kb: kb)
        #expect(u.map(\.key.gpuCount) == [1])
    }

    @Test("hybrid runs the shorter job first when only one GPU is free")
    func hybridShortFirst() {
        let d = schedule(HybridPolicy(), nodes: [NodeSlot(id: "v", gpuModel: "V100", gpuCount: 1)],
                         jobs: [job("long", "a", gpus: 1, work: 100_000), job("short", "a", gpus: 1, work: 100, arrival: 1)], kb: kb)
        #expect(d.map(\.jobID) == ["short"])
        let f = schedule(DBFIFOPolicy(), nodes: [NodeSlot(id: "v", gpuModel: "V100", gpuCount: 1)],
                         jobs: [job("long", "a", gpus: 1, work: 100_000), job("short", "a", gpus: 1, work: 100, arrival: 1)], kb: kb)
        #expect(f.map(\.jobID) == ["long"])
    }

    @Test("sia-unaware explores on one GPU, then prefers what it measured to be faster")
    func siaLearns() {
        var kb2 = kb
        kb2.recordOnline(ConfigKey(model: "a", task: "train", gpuModel: "T4", gpuCount: 1, batchPerGPU: 8), throughput: 5, unit: "steps/s", stepTime: nil)
        kb2.recordOnline(ConfigKey(model: "a", task: "train", gpuModel: "V100", gpuCount: 1, batchPerGPU: 8), throughput: 10, unit: "steps/s", stepTime: nil)
        let d = schedule(SiaPolicy(aware: false), nodes: [NodeSlot(id: "t4", gpuModel: "T4", gpuCount: 1), NodeSlot(id: "v", gpuModel: "V100", gpuCount: 1)],
                         jobs: [job("j1", "a", gpus: 1)], kb: kb2)
        #expect(d.map(\.key.gpuModel) == ["V100"])
    }

    @Test("an online service takes GPUs back from an offline job, which is preempted keeping its work")
    func servicePriority() throws {
        let r = KnowledgeImporter.importFile(dataDir + "/profiles/vidur/a100_Llama-2-7b-hf_mlp.csv")
        var kb2 = KnowledgeBase(rows: r.rows + [row("a", "A100-80GB", 1, 10)])
        _ = Estimator.estimateMissing(in: &kb2, gpuModels: ["A100-80GB"])
        let svc = ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1,
                              rateCurve: [RatePoint(time: 0, rps: 0), RatePoint(time: 100, rps: 1000)], meanPrefillTokens: 500, meanDecodeTokens: 100, sloSeconds: 20)
        var s = Scheduler(policy: DBFIFOPolicy(), kb: kb2, services: [svc])
        #expect(s.skippedServices.isEmpty)
        s.state.addNode(NodeSlot(id: "n", gpuModel: "A100-80GB", gpuCount: 2))
        s.state.submit(job("j", "a", gpus: 1))
        _ = s.step(now: 0)
        #expect(s.state.jobs["j"]!.phase == .running)
        let actions = s.step(now: 100, currentWork: { _ in 400 })
        #expect(actions.contains { if case .preemptJob("j", _, _) = $0 { return true }; return false })
        #expect(s.state.jobs["j"]!.workDone == 400 && s.state.jobs["j"]!.preemptions == 1)
        #expect(s.replicas(of: "s").count == 2)
        #expect(s.state.invariantViolations().isEmpty)
    }

    @Test("an elastic job shrinks onto the GPUs a service leaves (restarting from its checkpoint) instead of stopping; a rigid one is preempted")
    func elasticShrink() throws {
        let r = KnowledgeImporter.importFile(dataDir + "/profiles/vidur/a100_Llama-2-7b-hf_mlp.csv")
        // Job 'a' fits on 1, 2 or 4 GPUs, not on 3 (so 4 → 3 left must pick 2).
        var kb2 = KnowledgeBase(rows: r.rows + [row("a", "A100-80GB", 1, 10), row("a", "A100-80GB", 2, 18), row("a", "A100-80GB", 3, 0, fits: false), row("a", "A100-80GB", 4, 30)])
        _ = Estimator.estimateMissing(in: &kb2, gpuModels: ["A100-80GB"])
        let svc = ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1,
                              rateCurve: [RatePoint(time: 0, rps: 0), RatePoint(time: 100, rps: 1)], meanPrefillTokens: 500, meanDecodeTokens: 100, sloSeconds: 20, minReplicas: 0)
        func run(elastic: Bool) -> (Scheduler, [SchedulerAction]) {
            var s = Scheduler(policy: FIFOPolicy(), kb: kb2, services: [svc])
            s.state.addNode(NodeSlot(id: "n", gpuModel: "A100-80GB", gpuCount: 4))
            var j = job("j", "a", gpus: 4, gpuModel: "A100-80GB")
            j.elastic = elastic
            s.state.submit(j)
            _ = s.step(now: 0)
            let actions = s.step(now: 100, currentWork: { _ in 400 })
            return (s, actions)
        }
        let (s, actions) = run(elastic: true)
        #expect(s.replicas(of: "s").count == 1)
        let j = try #require(s.state.jobs["j"])
        #expect(j.phase == .running && j.placement?.gpus.count == 2 && j.placement?.nodeID == "n", "\(actions)")
        #expect(j.workDone == 400 && j.preemptions == 1 && s.shrinks == 1)
        #expect(actions.contains { if case .startJob("j", _, 400) = $0 { return true }; return false })
        #expect(actions.contains { if case .preemptJob("j", _, let why) = $0 { return why.contains("shrinks to 2 GPUs") }; return false })
        #expect(s.state.invariantViolations().isEmpty)
        let (rigid, _) = run(elastic: false)
        #expect(rigid.state.jobs["j"]?.phase == .pending && rigid.shrinks == 0)
    }
}

@Suite("Scheduler invariants")
struct InvariantTests {
    @Test("random starts, preemptions, failures and finishes never double-allocate or lose a job", arguments: [1, 2, 3, 4, 5] as [UInt64])
    func random(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var st = ClusterState()
        let models = ["T4", "V100"]
        for i in 0..<6 { st.addNode(NodeSlot(id: "n\(i)", gpuModel: models[i % 2], gpuCount: [1, 2, 4, 8][i % 4])) }
        var submitted = 0
        for step in 0..<2000 {
            let t = Double(step)
            switch Int(rng.uniform() * 6) {
            case 0: st.submit(job("j\(submitted)", "a", gpus: 1 << Int(rng.uniform() * 3))); submitted += 1
            case 1:
                if let j = st.pendingJobs.first, let node = st.nodeOrder.randomElement(using: &rng), let m = st.nodes[node]?.gpuModel {
                    _ = try? st.start(job: j.spec.id, node: node, key: ConfigKey(model: "a", task: "train", gpuModel: m, gpuCount: j.spec.requestedGPUs, batchPerGPU: 8), at: t)
                }
            case 2: if let j = st.runningJobs.randomElement(using: &rng) { st.preempt(job: j.spec.id, workDone: rng.uniform() * j.spec.work, at: t) }
            case 3: if let j = st.runningJobs.randomElement(using: &rng) { st.finish(job: j.spec.id, at: t) }
            case 4: if let n = st.nodeOrder.randomElement(using: &rng) { if rng.uniform() < 0.5 { st.nodeFailed(n, at: t) } else { st.nodeRecovered(n) } }
            default: if let j = st.runningJobs.randomElement(using: &rng) { st.progress(job: j.spec.id, workDone: rng.uniform() * j.spec.work, checkpointed: 0) }
            }
            let v = st.invariantViolations()
            #expect(v.isEmpty, "step \(step): \(v)")
            if !v.isEmpty { return }
            let total = st.jobs.count
            #expect(total == submitted)
            // The free-GPU index (updated incrementally) agrees with a count from the holders, and
            // its totals with the sum over alive nodes.
            let alive = st.nodes.values.filter(\.alive)
            #expect(st.free.totalFree == alive.reduce(0) { $0 + $1.freeCount }, "step \(step)")
            #expect(st.free.nodeCount == alive.count, "step \(step)")
            for n in alive { #expect(st.free.freeOn(n.id) == n.freeCount, "step \(step): \(n.id)") }
            for n in st.nodes.values where !n.alive { #expect(st.free.freeOn(n.id) == 0 && st.free.model(of: n.id) == nil) }
        }
    }

    @Test("every policy finishes every job of a generated trace in the twin, with a node failure, within capacity", arguments: Policies.names)
    func twin(policy: String) throws {
        let r = KnowledgeImporter.importAll(dataDirectory: dataDir)
        var kb = KnowledgeBase(rows: r.rows, facts: r.facts)
        _ = Estimator.estimateMissing(in: &kb, gpuModels: ["T4", "V100", "A100-80GB"])
        var nodes: [NodeSlot] = []
        for i in 0..<2 { nodes.append(NodeSlot(id: "a\(i)", gpuModel: "A100-80GB", gpuCount: 8)); nodes.append(NodeSlot(id: "v\(i)", gpuModel: "V100", gpuCount: 8)); nodes.append(NodeSlot(id: "t\(i)", gpuModel: "T4", gpuCount: 4)) }
        var g = TraceGenerator(); g.hours = 6
        let w = try g.generate(seed: 7, kb: kb, maxGPUsPerNode: ["A100-80GB": 8, "V100": 8, "T4": 4])
        #expect(w.jobs.count == 240)
        var opts = TwinOptions()
        opts.failures = [NodeFailure(node: "a0", at: 3 * 3600, downFor: 3600)]
        let p = try #require(Policies.named(policy))
        let res = DigitalTwin(nodes: nodes, workload: w, kb: kb, options: opts).run(policy: p)
        #expect(res.jobs.count == 240)
        #expect(res.finished.count == 240, "\(res.skipped.prefix(3))")
        let again = DigitalTwin(nodes: nodes, workload: w, kb: kb, options: opts).run(policy: p)
        #expect(again.summary == res.summary, "the twin is deterministic")
        for (m, u) in res.summary.utilization { #expect(u >= 0 && u <= 1.0001, "\(m) \(u)") }
        #expect(res.jobs.allSatisfy { ($0.jct ?? 0) >= 0 })
    }
}

@Suite("Twin fidelity")
struct TwinFidelityTests {
    let dataDir = TwinFidelityTests.repo + "/data"
    static let repo: String = {
        var dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while dir.path != "/" && !FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) { dir.deleteLastPathComponent() }
        return dir.path
    }()

    @Test("measurement noise is a common random number: the same (job, configuration, run, index) draws the same sample everywhere")
    func commonRandomNumbers() {
        let k = ConfigKey(model: "m", task: "t", gpuModel: "V100", gpuCount: 2, batchPerGPU: 8)
        let a = MeasurementNoise.normal(job: "j", key: k, run: 0, index: 3)
        #expect(a == MeasurementNoise.normal(job: "j", key: k, run: 0, index: 3))
        #expect(a != MeasurementNoise.normal(job: "j", key: k, run: 0, index: 4))
        #expect(a != MeasurementNoise.normal(job: "k", key: k, run: 0, index: 3))
        let xs = (0..<4000).map { MeasurementNoise.normal(job: "j", key: k, run: 0, index: $0) }
        let mean = xs.reduce(0, +) / Double(xs.count)
        let sd = (xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(xs.count)).squareRoot()
        #expect(abs(mean) < 0.06 && abs(sd - 1) < 0.06, "mean \(mean) sd \(sd)")
    }

    @Test("a crash stops a node's jobs at once; the scheduler acts only after the detection delay, and the lost work is redone")
    func crashThenDetection() throws {
        let (kb, _, _) = KnowledgeImporter.seeded(dataDirectory: dataDir)
        let spec = JobSpec(id: "j", kind: JobKind(model: "ResNet-50", task: "train", batchPerGPU: 64), arrival: 0, requestedGPUModel: "V100",
                           requestedGPUs: 1, work: 0, unit: "steps/s")
        let rate = try #require(kb.offline[ConfigKey(model: "ResNet-50", task: "train", gpuModel: "V100", gpuCount: 1, batchPerGPU: 64)]?.throughput)
        var job = spec
        job.work = rate * 4 * 3600   // 4 h on one V100
        let w = Workload(name: "one", jobs: [job])
        let nodes = [NodeSlot(id: "v0", gpuModel: "V100", gpuCount: 1), NodeSlot(id: "v1", gpuModel: "V100", gpuCount: 1)]
        func finish(_ detect: Double?) throws -> Double {
            var o = TwinOptions()
            o.failures = [NodeFailure(node: "v0", at: 3600, downFor: 1e9, detectedAfter: detect)]
            let r = DigitalTwin(nodes: nodes, workload: w, kb: kb, options: o).run(policy: try #require(Policies.named("fifo")))
            return try #require(r.jobs.first?.finish)
        }
        let atOnce = try finish(nil), late = try finish(1800)
        // Detected 30 min later, the job restarts 30 min later from the same checkpoint.
        #expect(abs((late - atOnce) - 1800) < 1, "at once \(atOnce), late \(late)")
        #expect(atOnce > 4 * 3600 + 1, "the work since the last checkpoint is lost and redone")
    }
}

@Suite("Workload")
struct WorkloadTests {
    @Test("generated traces: 960 jobs in 24 h, different per seed, sizes from the knowledge base")
    func generator() throws {
        let r = KnowledgeImporter.importAll(dataDirectory: dataDir)
        var kb = KnowledgeBase(rows: r.rows)
        _ = Estimator.estimateMissing(in: &kb, gpuModels: ["T4", "V100", "A100-80GB"])
        let g = TraceGenerator()
        let a = try g.generate(seed: 1, kb: kb, maxGPUsPerNode: ["T4": 4, "V100": 8, "A100-80GB": 8])
        let b = try g.generate(seed: 2, kb: kb, maxGPUsPerNode: ["T4": 4, "V100": 8, "A100-80GB": 8])
        #expect(a.jobs.count == 960 && b.jobs.count == 960)
        #expect(a.jobs.map(\.arrival) != b.jobs.map(\.arrival))
        #expect(a.jobs.allSatisfy { $0.arrival >= 0 && $0.arrival <= 24 * 3600 && $0.work > 0 })
        #expect(a.jobs.allSatisfy { j in kb.offline[ConfigKey(model: j.kind.model, task: j.kind.task, gpuModel: j.requestedGPUModel!, gpuCount: j.requestedGPUs, batchPerGPU: j.kind.batchPerGPU)]?.fits == true })
        #expect(a.jobs.contains { $0.kind.task.hasPrefix("finetune") } && a.jobs.contains { $0.kind.task == "train" })
    }

    @Test("a Gavel trace reads; bad rows are skipped with file, line and field")
    func gavelTrace() throws {
        let text = "ResNet-18 (batch size 32)\tcmd\t--num_steps\t1\t1000\t6.0\t1\nResNet-18 (batch size 32)\tcmd\t--num_steps\tx\t1000\t6.0\t1\nnot a job\tcmd\t-n\t1\t5\t0\t1\nshort\trow\n"
        let w = GavelTraceReader.parse(text, file: "g.trace", kb: nil)
        #expect(w.jobs.count == 1)
        #expect(w.skipped.map(\.description) == ["g.trace:2: scale factor: 'x' is not a GPU count ≥ 1",
                                                  "g.trace:3: job type: 'not a job' is not 'Model (batch size B)'",
                                                  "g.trace:4: row: 2 tab-separated fields, expected 7"])
        let real = try GavelTraceReader.read(file: dataDir + "/training/gavel/traces/0e4a51.trace", kb: nil, limit: 100)
        #expect(real.jobs.count == 100)
    }

    @Test("the Azure trace gives a rate curve with mean 1 and the trace's request mix")
    func azure() throws {
        let s = try AzureTraceShape.read(file: dataDir + "/inference/azure_llm_2023_code.csv")
        #expect(s.requests == 8819)
        #expect(abs(s.relativeRates.reduce(0, +) / Double(s.relativeRates.count) - 1) < 1e-9)
        #expect(s.meanPrefillTokens > s.meanDecodeTokens)
        #expect(throws: DataError.self) { try AzureTraceShape.parse("a,b\n1,2\n", file: "x.csv") }
    }
}
