import Foundation
import Scheduling
import Testing
@testable import Features

// The features' twin models: what the agents do, on virtual time, for the digital twin.

@Suite("Twin models")
struct TwinModelTests {

    @Test("inference: results are the serving engine's; a stopped replica delivers what finished before the stop, a crashed node's replicas nothing new")
    func inference() throws {
        let model = llamaA100
        var twin = InferenceTwinModel()
        twin.start("r1", node: "n1", model: model, batch: 1)
        twin.start("r2", node: "n2", model: model, batch: 1)
        let q = (0..<2).map { ServiceRequest(id: "q\($0)", serviceID: "s", arrival: 0, prefill: 500, decode: 100) }
        twin.serve("r1", q, at: 10)
        var reference = ServingEngine(model: model, config: ServingEngine.Config(maxRunning: 1))
        for r in q { _ = reference.add(id: r.id, prompt: r.prefill, decode: r.decode, at: 10) }
        let expected = reference.takeFinished(by: 1e9)
        #expect(twin.nextLook("r1") == 10, "the first step starts when the requests arrive")
        let all = twin.collect("r1", at: 1e9).finished
        #expect(all.map(\.completion.finished) == expected.map(\.finished))
        #expect(all[1].completion.ttft == expected[1].ttft && all[1].completion.queued == expected[1].admitted - 10)
        // Again, stopped between the two finishes: the first is delivered, the second was not.
        twin.start("r3", node: "n1", model: model, batch: 1)
        twin.serve("r3", q, at: 10)
        let first = twin.collect("r3", at: expected[0].finished).finished
        #expect(first.count == 1 && twin.delivers(first[0]))
        twin.stop("r3", at: (expected[0].finished + expected[1].finished) / 2)
        #expect(twin.collect("r3", at: 1e9).finished.isEmpty && twin.nextLook("r3") == nil, "a stopped replica serves nothing more")
        twin.serve("r2", [q[0]], at: 0)
        twin.nodeCrashed("n2", at: 0.5)
        #expect(twin.collect("r2", at: 1e9).finished.isEmpty, "a crashed node's replica answers nothing")
    }

    @Test("jobs: progress after the restart overhead at the model's rate; a crash keeps the checkpoint and voids the run's events; GPU time is counted")
    func jobs() throws {
        let r = KnowledgeImporter.importFile(dataDir + "/training/vectorlm-llm-finetune-throughput.md")
        let execution = ExecutionModel(kb: KnowledgeBase(rows: r.rows))
        let key = ConfigKey(model: "Llama-2-13b", task: "finetune-full", gpuModel: "A100-80GB", gpuCount: 1, batchPerGPU: 8)
        let spec = JobSpec(id: "j", kind: JobKind(model: "Llama-2-13b", task: "finetune-full", batchPerGPU: 8), arrival: 0, requestedGPUModel: nil,
                           requestedGPUs: 1, work: 1e9, unit: "tokens", priority: 0, elastic: false)
        var twin = JobsTwinModel(execution: execution)
        let p = Placement(nodeID: "n1", gpus: [0], key: key)
        let (gen, from) = twin.start(spec, placement: p, resume: 0, at: 100, startLatency: 2)
        #expect(from == 100 + execution.restartSeconds(spec) + 2)
        let rate = execution.rate(key)
        #expect(rate > 0)
        #expect(twin.work("j", at: from - 1) == 0, "no progress during the overhead")
        #expect(abs(twin.work("j", at: from + 1000)! - 1000 * rate) < 1e-6)
        #expect(abs(twin.finishTime("j", at: from)! - (from + 1e9 / rate)) < 1e-6)
        let measured = twin.measure("j", at: from + 1000, interval: 300)
        let m = try #require(measured)
        #expect(m.throughput > rate * 0.5 && m.throughput < rate * 1.5, "measured with noise around the rate")
        #expect(m.checkpointed == execution.checkpointed(resume: 0, ranFor: 1000, rate: rate))
        let lost = twin.nodeCrashed("n1", at: from + 1000)
        #expect(lost.count == 1 && lost[0].work == lost[0].checkpointed && lost[0].checkpointed < m.work)
        #expect(!twin.isCurrent("j", generation: gen), "the crashed run's finish and report events no longer count")
        #expect(twin.liveRuns(on: "n1", at: from + 1000).isEmpty)
        twin.end("j", at: from + 1060)
        #expect(abs(twin.busyGPUSeconds["A100-80GB"]! - (from + 1060 - 100)) < 1e-6)
    }
}
