import Experiments
import Foundation
import Scheduling
import Testing
@testable import Features

// The iteration-level serving engine, with answers worked out from the same profile functions.

@Suite("Serving engine")
struct ServingEngineTests {
    private var m: InferenceModel { llamaA100 }

    private func engine(running: Int = 8, blocks: Int? = nil, swap: Int = 0, preemption: ServingEngine.Preemption = .recompute, budget: Int = 2048) -> ServingEngine {
        var c = ServingEngine.Config(maxRunning: running)
        c.gpuBlocks = blocks; c.swapBlocks = swap; c.preemption = preemption; c.maxBatchedTokens = budget
        return ServingEngine(model: m, config: c)
    }

    @Test("gpu_memory_utilization sets the memory the weights and KV cache share (vLLM's): half of it leaves fewer blocks, exactly what is left after the weights")
    func memoryUtilization() {
        var half = m
        half.memoryUtilization = 0.5
        let e = ServingEngine(model: half, config: ServingEngine.Config(maxRunning: 8))
        #expect(e.gpuBlocks == Int((80 * 1_073_741_824 * 0.5 - m.arch.weightBytes) / (m.arch.kvBytesPerToken * 16)))
        #expect(e.gpuBlocks < engine().gpuBlocks / 2, "the weights take the same bytes out of less memory")
        // The service's value reaches the planned model (the twin's engines and the coordinator's batch).
        var s = ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1, rateCurve: [RatePoint(time: 0, rps: 1)],
                            meanPrefillTokens: 500, meanDecodeTokens: 100, sloSeconds: 60)
        s.gpuMemoryUtilization = 0.5
        #expect(Scheduler(policy: Policies.named("hybrid")!, kb: llamaA100KB).plannedModel(s)?.memoryUtilization == 0.5)
        #expect(s.submission.gpuMemoryUtilization == 0.5)
        // Too little for the weights: refused with the reason.
        s.gpuMemoryUtilization = 0.1
        var sched = Scheduler(policy: Policies.named("hybrid")!, kb: llamaA100KB)
        sched.addService(s)
        #expect(sched.skippedServices.first?.reason.contains("does not fit 1xA100-80GB at gpu_memory_utilization 0.1") == true, "\(sched.skippedServices)")
    }

    @Test("one request: a prefill step, then one decode step per further token; its blocks come back")
    func single() throws {
        var e = engine()
        #expect(e.gpuBlocks == Int((80 * 1_073_741_824 * 0.9 - m.arch.weightBytes) / (m.arch.kvBytesPerToken * 16)), "blocks from the memory left after the weights")
        #expect(e.add(id: "q", prompt: 100, decode: 5, at: 1) == nil)
        e.advance(to: 1)
        #expect(e.usedBlocks == 7, "⌈100 / 16⌉ blocks for the prompt")
        let done = e.takeFinished(by: 100)
        let f = try #require(done.first)
        let prefill = m.iteration(tokens: 100) + m.attention(kvTokens: 50)
        var t = 1 + prefill
        #expect(abs(f.firstToken - t) < 1e-12 && abs(f.ttft - prefill) < 1e-12)
        var gaps: [Double] = []
        for computed in 100..<104 { let d = m.iteration(tokens: 1) + m.attention(kvTokens: Double(computed)); gaps.append(d); t += d }
        #expect(abs(f.finished - t) < 1e-12)
        #expect(abs(f.meanTBT - gaps.reduce(0, +) / 4) < 1e-12 && abs(f.maxTBT - gaps.max()!) < 1e-12)
        #expect(e.steps == 5 && e.usedBlocks == 0 && e.isIdle && f.preemptions == 0)
    }

    @Test("a cached prefix: only the rest of the prompt is prefilled, and the wait for the load counts in TTFT")
    func cachedPrefix() throws {
        var e = engine()
        // 1,024 of 1,100 prompt tokens loaded from a tier; the load took from t = 1 to t = 1.2.
        #expect(e.add(id: "q", prompt: 1100, decode: 2, at: 1.2, cached: 1024, arrivedAt: 1) == nil)
        let f = try #require(e.takeFinished(by: 100).first)
        let prefill = m.iteration(tokens: 76) + m.attention(kvTokens: 1024 + 38)
        #expect(abs(f.firstToken - (1.2 + prefill)) < 1e-12)
        #expect(abs(f.ttft - (0.2 + prefill)) < 1e-12 && f.arrived == 1)
        // The whole prompt computed, for comparison: more than the load saved.
        var full = engine()
        _ = full.add(id: "q", prompt: 1100, decode: 2, at: 1)
        let g = try #require(full.takeFinished(by: 100).first)
        #expect(g.ttft > prefill)
        // A prompt entirely cached still computes its last token.
        var all = engine()
        _ = all.add(id: "q", prompt: 512, decode: 1, at: 0, cached: 512)
        let h = try #require(all.takeFinished(by: 100).first)
        #expect(abs(h.ttft - (m.iteration(tokens: 1) + m.attention(kvTokens: 511.5))) < 1e-12)
    }

    @Test("continuous batching: decodes share a step; a long prompt is prefilled in chunks beside them")
    func batchingAndChunkedPrefill() throws {
        var e = engine(budget: 2048)
        _ = e.add(id: "short", prompt: 10, decode: 50, at: 0)
        e.advance(to: 0)   // its prefill step is running
        _ = e.add(id: "long", prompt: 5000, decode: 2, at: 0.0001)
        let out = e.takeFinished(by: 1000)
        let long = try #require(out.first { $0.id == "long" }), short = try #require(out.first { $0.id == "short" })
        // The long prompt takes ⌈5000 / 2047⌉ steps beside the short request's decode token each
        // step, so the short one never waits more than one step between tokens.
        let stepWithChunk = m.iteration(tokens: 2048) + m.attention(kvTokens: 2047 + 10)
        #expect(short.maxTBT < stepWithChunk * 1.5, "\(short.maxTBT)")
        #expect(long.ttft > 2 * m.iteration(tokens: 2047), "prefilled over several steps")
        #expect(e.steps >= 50 && e.usedBlocks == 0)
        // Two at once decode in one step: twice the requests, far less than twice the steps.
        var pair = engine()
        _ = pair.add(id: "a", prompt: 10, decode: 100, at: 0); _ = pair.add(id: "b", prompt: 10, decode: 100, at: 0)
        #expect(pair.takeFinished(by: 1000).count == 2 && pair.steps == 100)
    }

    @Test("the load the policies read: the head of the queue's demand, and every waiting request's (what dispatching counts)")
    func waitingDemand() {
        var e = engine(running: 1)
        _ = e.add(id: "q0", prompt: 10, decode: 20, at: 0)
        _ = e.add(id: "q1", prompt: 33, decode: 5, at: 0)      // 3 blocks of 16 tokens
        _ = e.add(id: "q2", prompt: 160, decode: 5, at: 0)     // 10 blocks
        _ = e.takeFinished(by: 0.001)                          // q0 is admitted; one slot, so q1 and q2 wait
        let l = e.loadSnapshot
        #expect(l.running.map(\.id) == ["q0"] && l.waiting == 2)
        #expect(l.headOfQueueDemand == 3 && l.waitingDemand == 13, "\(l)")
    }

    @Test("at most max-running sequences run; the next waits for a slot, first come first served")
    func slots() {
        var e = engine(running: 2)
        for (i, t) in [0.0, 0.0, 0.0].enumerated() { _ = e.add(id: "q\(i)", prompt: 10, decode: 20, at: t) }
        let out = e.takeFinished(by: 1000)
        #expect(out.map(\.id) == ["q0", "q1", "q2"])
        #expect(out[2].firstToken > out[0].finished - 1e-12, "q2 starts once a slot frees")
    }

    @Test("out of blocks: the newest is preempted and recomputed, every request finishes, no block leaks")
    func recompute() {
        // 10 blocks of 16 tokens: two requests of 64 + 60 tokens cannot both grow to 124.
        var e = engine(blocks: 10)
        _ = e.add(id: "old", prompt: 64, decode: 60, at: 0)
        _ = e.add(id: "new", prompt: 64, decode: 60, at: 0.001)
        let out = e.takeFinished(by: 10_000)
        #expect(out.map(\.id) == ["old", "new"])
        #expect(out[0].preemptions == 0 && out[1].preemptions >= 1 && e.preemptions >= 1)
        #expect(e.usedBlocks == 0 && e.isIdle)
        // Its recompute re-prefilled what it had generated: it took more steps than without.
        var roomy = engine()
        _ = roomy.add(id: "old", prompt: 64, decode: 60, at: 0); _ = roomy.add(id: "new", prompt: 64, decode: 60, at: 0.001)
        _ = roomy.takeFinished(by: 10_000)
        #expect(e.steps > roomy.steps)
    }

    @Test("swap preemption keeps the sequence's KV in host memory and resumes it without recompute")
    func swap() {
        var e = engine(blocks: 10, swap: 10, preemption: .swap)
        _ = e.add(id: "old", prompt: 64, decode: 60, at: 0)
        _ = e.add(id: "new", prompt: 64, decode: 60, at: 0.001)
        let out = e.takeFinished(by: 10_000)
        #expect(out.map(\.id) == ["old", "new"] && out[1].preemptions >= 1)
        #expect(e.usedBlocks == 0 && e.freeSwapBlocks == 10)
        #expect(e.add(id: "huge", prompt: 200, decode: 1, at: 20_000)?.contains("needs 13 KV blocks") == true, "a request that can never fit is refused")
    }

    @Test("swap to a memory host: the preempted request's KV leaves, comes back when asked for, and it goes on without recompute; lost KV is recomputed")
    func remoteSwap() throws {
        var e = engine(blocks: 10)
        e.remoteSwap = { _, _ in true }
        _ = e.add(id: "old", prompt: 64, decode: 60, at: 0)
        _ = e.add(id: "new", prompt: 64, decode: 60, at: 0.001)
        e.advance(to: 1000)
        // "new" was preempted when blocks ran out: its KV (5 blocks) goes out to a memory host.
        let outs = e.takeSwapOuts()
        #expect(outs.count == 1 && outs[0].id == "new" && outs[0].blocks == 5 && outs[0].tokens >= 64 && e.remoteSwaps == 1)
        #expect(e.place(of: "new") == .swapped)
        let old = try #require(e.takeFinished(by: 1000).first)
        #expect(old.id == "old")
        // With "old" gone there is room: "new"'s blocks are reserved and its KV asked for; nothing
        // runs until it is back.
        let ins = e.takeSwapIns()
        #expect(ins.map(\.id) == ["new"] && ins[0].blocks == 5 && e.usedBlocks == 5)
        #expect(e.waitingForSwapIn && e.nextStepAt == nil && e.takeFinished(by: 2000).isEmpty)
        let steps = e.steps
        e.swapInDone("new", readyAt: 2000)
        let new = try #require(e.takeFinished(by: 5000).first)
        // It goes on decoding: one step per token left, no prefill again.
        #expect(new.preemptions == 1 && e.steps - steps == 123 - outs[0].tokens)   // it had 64 + (generated − 1) tokens of KV
        #expect(new.maxTBT >= 2000 - outs[0].at - 1)
        #expect(e.usedBlocks == 0 && e.isIdle)

        // KV that cannot come back: the request is prefilled again.
        var f = engine(blocks: 10)
        f.remoteSwap = { _, _ in true }
        _ = f.add(id: "old", prompt: 64, decode: 60, at: 0)
        _ = f.add(id: "new", prompt: 64, decode: 60, at: 0.001)
        _ = f.takeFinished(by: 1000)
        _ = f.takeSwapOuts()
        #expect(f.takeSwapIns().count == 1)
        f.swapInFailed("new")
        #expect(f.place(of: "new") == .waiting && f.usedBlocks == 0)
        #expect(f.takeFinished(by: 5000).first?.id == "new" && f.isIdle)
    }

    @Test("a removed request frees its blocks wherever it is")
    func remove() {
        var e = engine()
        _ = e.add(id: "a", prompt: 100, decode: 100, at: 0)
        e.advance(to: 0.5)
        #expect(e.usedBlocks > 0 && e.remove("a") && e.usedBlocks == 0 && e.isIdle && !e.remove("a"))
    }
}
