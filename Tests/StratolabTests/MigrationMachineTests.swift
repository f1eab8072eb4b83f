import Foundation
import Scheduling
import Testing
@testable import Features

// The migration state machines driven over two real serving engines with an injected clock: the
// happy paths of live, blocking and recompute, and every abort path.

private var model: InferenceModel { llamaA100 }

/// Two engines and one migration between them; copies take bytes / bandwidth of virtual time while
/// the source keeps decoding.
private struct Harness {
    var src = ServingEngine(model: model, config: ServingEngine.Config(maxRunning: 8))
    var dst = ServingEngine(model: model, config: ServingEngine.Config(maxRunning: 8))
    var source: MigrationSource
    var dest: MigrationDestination?
    var now = 0.0
    var kept: ServingEngine.SequenceState?
    var log: [String] = []
    let plan: MigrationPlan
    let request = "q"
    let prompt: Int, decode: Int

    /// Staging: blocks on the memory host, whether its put fails, whether the destination refuses the hand-over.
    var hostHolds: Int?
    var stageFails = false, handOverFails = false
    /// Everything the destination finished, and when it asked the host for the KV back.
    var dstAll: [ServingEngine.Finished] = []
    var fetchAskedAt: Double?

    init(method: MigrationMethod, prompt: Int = 2000, decode: Int = 400, bandwidth: Double = 10e9, dstBlocks: Int? = nil,
         staging: Bool = false, stageFails: Bool = false, handOverFails: Bool = false, dstBusy: (prompt: Int, decode: Int)? = nil) {
        self.prompt = prompt; self.decode = decode
        self.stageFails = stageFails; self.handOverFails = handOverFails
        if let b = dstBlocks { var c = ServingEngine.Config(maxRunning: 8); c.gpuBlocks = b; dst = ServingEngine(model: model, config: c) }
        if let busy = dstBusy { _ = dst.add(id: "other", prompt: busy.prompt, decode: busy.decode, at: 0); dst.advance(to: 1) }
        var plan = MigrationPlan(method: method, blockBytes: model.arch.kvBytesPerToken * 16, bandwidthBytesPerSecond: bandwidth)
        plan.staging = staging
        self.plan = plan
        _ = src.add(id: request, prompt: prompt, decode: decode, at: 0)
        now = 1   // prefill done, decoding
        src.advance(to: now)
        let total = (prompt + decode + 15) / 16
        let (m, first) = MigrationSource.start(request: request, plan: plan, totalBlocks: total, at: now)
        source = m
        run(first)
    }

    var computed: Int { src.completeBlocks(of: request) ?? 0 }

    mutating func run(_ directives: [MigrationSource.Directive]) {
        for d in directives {
            switch d {
            case .reserve(let blocks):
                switch MigrationDestination.reserve(request: request, blocks: blocks, free: dst.freeBlocks) {
                case .success(let m):
                    _ = dst.reserve(blocks); dest = m
                    run(source.reserved(true, computed: computed, at: now))
                case .failure(let a):
                    run(source.reserved(false, reason: "\(a)", computed: computed, at: now))
                }
            case .copy(_, let blocks):
                now += Double(blocks.count) * plan.blockBytes / plan.bandwidthBytesPerSecond
                src.advance(to: now)
                if src.state(of: request) == nil { run(source.requestEnded(preempted: false)); return }
                #expect(dest!.receive(blocks) == nil)
                log.append("stage \(blocks)")
                run(source.stageCopied(computed: computed, at: now))
            case .suspend:
                src.advance(to: now)
                guard let st = src.suspend(request) else { run(source.requestEnded(preempted: false)); return }
                kept = st
                run(source.suspended(computed: (st.computed + 15) / 16, at: now))
            case .copyFinal(let blocks):
                now += Double(blocks.count) * plan.blockBytes / plan.bandwidthBytesPerSecond + 0.0005
                #expect(dest!.receive(blocks) == nil)
                log.append("final \(blocks)")
                run(source.finalDelivered(at: now))
                for r in dest!.commit() { if case .resume(let b) = r { dst.resume(kept!, reserved: dest!.reservedBlocks, kvBlocks: b, at: now); log.append("resumed with \(b)") } }
                run(source.committed(at: now))
            case .stageOut(let blocks):
                now += Double(blocks.count) * plan.blockBytes / plan.bandwidthBytesPerSecond
                log.append("staged \(blocks)")
                if !stageFails { hostHolds = blocks.count }
                run(source.stagedOut(!stageFails, reason: "host gone", blocks: blocks.count, at: now))
            case .handOver(let n):
                if handOverFails { run(source.destinationFailed("refused")); return }
                dst.adoptStaged(kept!, at: now)
                log.append("handed over \(n)")
                run(source.committed(at: now))
            case .dropStaged:
                hostHolds = nil
                log.append("dropped staged")
            case .free:
                kept = nil
            case .resumeHere:
                src.resume(kept!, reserved: 0, kvBlocks: (kept!.computed + 15) / 16, at: now); kept = nil
            case .abortDestination:
                for r in dest?.abort() ?? [] { if case .release(let b) = r { dst.release(b) } }
            case .report(let p):
                log.append("report \(p)")
            }
        }
    }

    /// Runs both engines to the end; the request's results on each. KV the destination asks back
    /// from the memory host arrives `fetchSeconds` after it asks.
    mutating func finish(fetchSeconds: Double = 0.01) -> (src: [ServingEngine.Finished], dst: [ServingEngine.Finished]) {
        var dstDone: [ServingEngine.Finished] = []
        for _ in 0..<10_000 {
            dstDone += dst.takeFinished(by: 1e9)
            let ins = dst.takeSwapIns()
            if ins.isEmpty { break }
            for i in ins { dst.swapInDone(i.id, readyAt: i.at + fetchSeconds); log.append("fetched \(i.blocks) at \(i.at)"); hostHolds = nil; fetchAskedAt = i.at }
        }
        dstAll = dstDone
        return (src.takeFinished(by: 1e9).filter { $0.id == request }, dstDone.filter { $0.id == request })
    }
}

@Suite("Migration machines")
struct MigrationMachineTests {
    @Test("live: stages shrink while the request decodes, the last fits the downtime budget, and it finishes once on the destination with every token")
    func live() throws {
        var h = Harness(method: .live, bandwidth: 2e9)
        #expect(h.source.phase == .done, "\(h.log)")
        #expect(h.source.stages >= 1 && h.log.contains { $0.hasPrefix("final ") }, "stage 1 copies what exists, the final stage the rest: \(h.log)")
        let (s, d) = h.finish()
        #expect(s.isEmpty && d.count == 1, "served once, on the destination")
        let f = try #require(d.first)
        #expect(f.firstToken < 1, "its first token was on the source")
        // Downtime: the largest gap between tokens is the final stage plus a step, within budget.
        let final = Double(h.plan.finalStageBlocks) * h.plan.blockBytes / h.plan.bandwidthBytesPerSecond
        #expect(f.maxTBT < final + 0.0005 + 0.1, "\(f.maxTBT)")
        #expect(h.src.usedBlocks == 0 && h.dst.usedBlocks == 0, "no block leaks on either side")
    }

    @Test("staging: a destination without room takes the request through a memory host; it waits there ahead of new arrivals, runs once room comes with its KV fetched back, and finishes once with every token")
    func staging() throws {
        // The destination's 300 blocks are mostly held by a long request; q needs about 140.
        var h = Harness(method: .live, bandwidth: 2e9, dstBlocks: 300, staging: true, dstBusy: (prompt: 3000, decode: 200))
        #expect(h.source.phase == .done && h.source.staged && h.source.stagedBlocks > 0, "\(h.log)")
        #expect(h.log.first { $0.hasPrefix("staged") } != nil && h.log.contains { $0.hasPrefix("handed over") }, "\(h.log)")
        #expect(h.src.usedBlocks == 0 && h.src.state(of: h.request) == nil, "the source is emptied at once")
        #expect(h.dst.place(of: h.request) == .swapped && h.hostHolds == h.source.stagedBlocks)
        let generated = try #require(h.dst.peek(h.request)).generated
        // A new arrival after the hand-over queues behind it.
        _ = h.dst.add(id: "late", prompt: 100, decode: 10, at: h.now)
        let stepsBefore = h.dst.steps
        let (s, d) = h.finish()
        #expect(s.isEmpty && d.count == 1, "served once, on the destination")
        let f = try #require(d.first)
        #expect(f.firstToken < 1 && generated > 1, "its first token was on the source")
        #expect(h.hostHolds == nil && h.log.contains { $0.hasPrefix("fetched") }, "its KV came back from the host: \(h.log)")
        #expect(h.dst.usedBlocks == 0 && h.src.usedBlocks == 0, "no block leaks on either side")
        #expect(h.dst.steps > stepsBefore)
        let late = try #require(h.dstAll.first { $0.id == "late" }), asked = try #require(h.fetchAskedAt)
        #expect(late.admitted >= asked, "the new arrival waited behind the staged request: admitted \(late.admitted), KV asked back at \(asked)")
    }

    @Test("staging that fails (the memory host refuses the put, or the destination the hand-over): the request resumes on the source from its KV, the host's copy is dropped, and it finishes once there")
    func stagingFails() throws {
        for (put, handOver) in [(true, false), (false, true)] {
            var h = Harness(method: .live, bandwidth: 2e9, dstBlocks: 100, staging: true, stageFails: put, handOverFails: handOver)
            guard case .aborted(let why) = h.source.phase else { Issue.record("\(h.source.phase) \(h.log)"); continue }
            #expect(put ? why == .stagingFailed("host gone") : why == .destinationFailed("refused"))
            #expect(h.hostHolds == nil && h.log.contains("dropped staged"), "\(h.log)")
            let (s, d) = h.finish()
            #expect(s.count == 1 && d.isEmpty, "served once, on the source")
            #expect(h.src.usedBlocks == 0 && h.dst.usedBlocks == 0)
        }
    }

    @Test("without staging a full destination ends the migration, and the request keeps running on the source")
    func fullWithoutStaging() throws {
        var h = Harness(method: .live, bandwidth: 2e9, dstBlocks: 100)
        #expect({ if case .aborted(.destinationFull) = h.source.phase { return true }; return false }(), "\(h.source.phase)")
        let (s, d) = h.finish()
        #expect(s.count == 1 && d.isEmpty && !h.source.staged)
    }

    @Test("blocking copies everything at once, recompute only the state: both stall longer than live, and grow with the sequence")
    func baselines() throws {
        func stall(_ m: MigrationMethod, prompt: Int) throws -> Double {
            var h = Harness(method: m, prompt: prompt, bandwidth: 2e9)
            let (_, d) = h.finish()
            #expect(h.dst.usedBlocks == 0 && h.src.usedBlocks == 0)
            return try #require(d.first).maxTBT
        }
        let live = try stall(.live, prompt: 4000), blocking = try stall(.blocking, prompt: 4000), recompute = try stall(.recompute, prompt: 4000)
        #expect(blocking > live && recompute > live, "live \(live) blocking \(blocking) recompute \(recompute)")
        #expect(try stall(.blocking, prompt: 8000) > blocking && (try stall(.recompute, prompt: 8000)) > recompute)
        var r = Harness(method: .recompute)
        #expect(r.log.contains("final 0..<0") && r.finish().dst.count == 1)
    }

    @Test("a destination without room refuses the reservation: the request stays and finishes on the source")
    func destinationFull() {
        var h = Harness(method: .live, dstBlocks: 10)
        if case .aborted(.destinationFull(let why)) = h.source.phase { #expect(why.contains("needs 150 blocks, 10 free")) } else { Issue.record("\(h.source.phase)") }
        #expect(h.source.sourceOwns)
        let (s, d) = h.finish()
        #expect(s.count == 1 && d.isEmpty && h.dst.usedBlocks == 0)
    }

    @Test("the request finishes on the source mid-migration: the destination gives its reservation back")
    func finishesFirst() {
        // A short output and a slow link: it ends before the first stage is through.
        var h = Harness(method: .live, prompt: 2000, decode: 60, bandwidth: 1e8)
        #expect(h.source.phase == .aborted(.requestFinished), "\(h.source.phase)")
        #expect(h.dest?.phase == .released && h.dst.usedBlocks == 0)
        #expect(h.finish().src.count == 1)
    }

    @Test("the final stage is sized from the bandwidth the stages achieved, not the plan's figure")
    func measuredBandwidth() {
        var plan = MigrationPlan(method: .live, blockBytes: 1_000_000, bandwidthBytesPerSecond: 1e9)
        plan.downtimeBudget = 0.02   // 20 blocks at the planned 1 GB/s
        var m = MigrationSource.start(request: "q", plan: plan, totalBlocks: 500, at: 0).0
        #expect(m.reserved(true, computed: 100, at: 0) == [.copy(stage: 1, blocks: 0..<100)])
        // Stage 1 took 1 s: 100 MB/s, so 2 blocks fit the budget; 10 new blocks mean another stage.
        #expect(m.stageCopied(computed: 110, at: 1) == [.copy(stage: 2, blocks: 100..<110)])
        #expect(m.measuredBandwidth == 1e8)
        // One block left, within the budget, and stage 2 shrank the remainder: one more short
        // stage; then nothing whole is left and it goes final.
        #expect(m.stageCopied(computed: 111, at: 1.1) == [.copy(stage: 3, blocks: 110..<111)])
        #expect(m.stageCopied(computed: 111, at: 1.11) == [.suspend])
    }

    @Test("within the budget, stages go on while they shrink what remains, so the final stage is about one block at any length; a remainder that stops shrinking goes final")
    func settlesBeforeTheFinalStage() {
        var plan = MigrationPlan(method: .live, blockBytes: 1_000_000, bandwidthBytesPerSecond: 1e9)
        plan.downtimeBudget = 0.02   // 20 blocks
        for total in [16, 64, 512] {
            var m = MigrationSource.start(request: "q", plan: plan, totalBlocks: total + 100, at: 0).0
            var d = m.reserved(true, computed: total, at: 0)
            var computed = total, now = 0.0
            // The request adds a block per 10 ms; each stage copies at 1 GB/s (1 ms a block).
            while case .copy(_, let r)? = d.first {
                now += Double(r.count) * 0.001
                computed = total + Int(now / 0.01)
                d = m.stageCopied(computed: computed, at: now)
            }
            #expect(d == [.suspend], "\(total) blocks: \(d)")
            #expect(computed - m.sent <= 1, "\(total) blocks: \(computed - m.sent) left for the final stage")
        }
        // Not shrinking: a stage of 5 blocks left 5 again; within the budget, so it goes final.
        var m = MigrationSource.start(request: "q", plan: plan, totalBlocks: 500, at: 0).0
        _ = m.reserved(true, computed: 100, at: 0)
        #expect(m.stageCopied(computed: 105, at: 0.1) == [.copy(stage: 2, blocks: 100..<105)])
        #expect(m.stageCopied(computed: 110, at: 0.105) == [.suspend])
    }

    @Test("a migration that never converges stops at the stage cap; the request carries on at the source")
    func stageCap() {
        // The copy of each stage takes longer than the blocks the request adds meanwhile: with a
        // one-block budget and a link this slow, it never gets there.
        var plan = MigrationPlan(method: .live, blockBytes: 1e9, bandwidthBytesPerSecond: 1e6)
        plan.downtimeBudget = 0; plan.stageCap = 3
        var m = MigrationSource.start(request: "q", plan: plan, totalBlocks: 500, at: 0).0
        var d = m.reserved(true, computed: 100, at: 0)
        var computed = 100
        while case .copy? = d.first { computed += 50; d = m.stageCopied(computed: computed, at: 0) }
        #expect(m.phase == .aborted(.stageCap(3)) && d.contains(.abortDestination(.stageCap(3))) && m.sourceOwns)
    }

    @Test("the destination fails: before the final stage the source simply keeps it; after the suspension it resumes at the source")
    func destinationFails() throws {
        var plan = MigrationPlan(method: .live, blockBytes: 1, bandwidthBytesPerSecond: 1)
        plan.downtimeBudget = 1
        var early = MigrationSource.start(request: "q", plan: plan, totalBlocks: 100, at: 0).0
        _ = early.reserved(true, computed: 50, at: 0)
        #expect(early.destinationFailed("peer gpu-1 unreachable") == [.report(.aborted(.destinationFailed("peer gpu-1 unreachable")))] && early.sourceOwns)
        var late = MigrationSource.start(request: "q", plan: plan, totalBlocks: 100, at: 0).0
        _ = late.reserved(true, computed: 0, at: 0)   // nothing whole yet: straight to the final stage
        #expect(late.phase == .finalCopy && !late.sourceOwns)
        _ = late.suspended(computed: 1, at: 0)
        #expect(late.destinationFailed("killed").first == .resumeHere && late.sourceOwns)
        // Over an engine: the request resumes at the source and finishes there, once.
        var src = ServingEngine(model: model, config: ServingEngine.Config(maxRunning: 4))
        _ = src.add(id: "q", prompt: 100, decode: 200, at: 0)
        src.advance(to: 0.1)
        let suspended = src.suspend("q")
        let kept = try #require(suspended)
        src.resume(kept, reserved: 0, kvBlocks: (kept.computed + 15) / 16, at: 0.6)
        let done = src.takeFinished(by: 1e9)
        #expect(done.count == 1 && done[0].preemptions == 0 && src.usedBlocks == 0)
    }

    @Test("blocks out of order or beyond the reservation are refused by name; the source dying leaves a partial copy the request resumes from")
    func destinationChecksAndOrphans() throws {
        var d = try MigrationDestination.reserve(request: "q", blocks: 10, free: 100).get()
        #expect(d.receive(0..<4) == nil)
        #expect(d.receive(5..<6)?.contains("out of order: 4 arrived so far") == true)
        #expect(d.receive(4..<11)?.contains("exceed its 10 reserved") == true)
        #expect(d.sourceFailed() == [.reportPartial(blocks: 4)] && d.phase == .orphaned)
        #expect(d.receive(4..<5)?.contains("orphaned") == true, "a block for a migration that ended is refused")
        // Resuming from 4 blocks of KV prefills only the rest again.
        var full = ServingEngine(model: model, config: ServingEngine.Config(maxRunning: 4))
        _ = full.add(id: "q", prompt: 150, decode: 100, at: 0)
        full.advance(to: 0.05)
        var st = try #require(full.state(of: "q"))
        var dst = ServingEngine(model: model, config: ServingEngine.Config(maxRunning: 4))
        _ = dst.reserve(10)
        dst.resume(st, reserved: 10, kvBlocks: 4, at: 1)   // 4 of the 10 reserved blocks arrived
        let f = try #require(dst.takeFinished(by: 1e9).first)
        // One step prefills the rest (and emits the next token), one step for each token after.
        #expect(dst.steps == st.decode - st.generated && f.finished > 1 && dst.usedBlocks == 0, "\(dst.steps) \(st)")
    }

    @Test("random interleavings of stages, finishes and failures: the request always has exactly one owner and no block leaks", arguments: 0..<200)
    func randomInterleavings(seed: Int) {
        var rng = SplitMix64(seed: UInt64(seed))
        var plan = MigrationPlan(method: MigrationMethod.allCases[seed % 3], blockBytes: 1, bandwidthBytesPerSecond: 1)
        plan.downtimeBudget = Double(rng.next() % 8); plan.stageCap = 4
        var (m, _) = MigrationSource.start(request: "q", plan: plan, totalBlocks: 200, at: 0)
        var dest: MigrationDestination? = nil
        var free = 300
        var computed = 20
        var destHolds = false, sourceRuns = true, finishedAt: String?
        if rng.next() % 5 == 0 { _ = m.reserved(false, reason: "full", computed: computed, at: 0) } else {
            dest = try? MigrationDestination.reserve(request: "q", blocks: 200, free: free).get(); free -= 200
            var ds = m.reserved(true, computed: computed, at: 0)
            for _ in 0..<20 {
                func apply(_ ds: [MigrationSource.Directive]) {
                    for d in ds {
                        switch d {
                        case .copy(_, let b): _ = dest?.receive(b)
                        case .suspend: sourceRuns = false
                        case .copyFinal(let b): _ = dest?.receive(b)
                        case .resumeHere: sourceRuns = true
                        case .abortDestination: if case .release(let n)? = dest?.abort().first { free += n }
                        case .free, .reserve, .report, .stageOut, .handOver, .dropStaged: break
                        }
                    }
                }
                apply(ds); ds = []
                switch rng.next() % 6 {
                case 0, 1:
                    computed += Int(rng.next() % 6)
                    if case .copying = m.phase { ds = m.stageCopied(computed: computed, at: 0) }
                    else if m.phase == .finalCopy && !sourceRuns { ds = m.suspended(computed: computed, at: 0) + m.finalDelivered(at: 0) }
                case 2:
                    if m.phase == .committing, dest?.commit().isEmpty == false { destHolds = true; ds = m.committed(at: 0) }
                case 3:
                    if sourceRuns && m.sourceOwns { ds = m.requestEnded(preempted: rng.next() % 2 == 0); finishedAt = "source" }
                case 4:
                    if !destHolds { ds = m.destinationFailed("killed"); if case .release(let n)? = dest?.abort().first { free += n } }
                default:
                    if m.sourceOwns && !(m.phase == .done) { ds = m.cancel("operator") }
                }
                if finishedAt != nil { apply(ds); break }
            }
        }
        // Exactly one owner: the source (running, or finished there), or the destination once committed.
        switch m.phase {
        case .done: #expect(destHolds && !sourceRuns && dest?.phase == .resumed)
        case .aborted: #expect(m.sourceOwns && !destHolds)
        case .reserving, .copying: #expect(sourceRuns && !destHolds)
        case .finalCopy, .committing: #expect(!sourceRuns && !destHolds, "in the downtime it runs nowhere, and is resumed by one side")
        }
        if case .aborted = m.phase { #expect(dest == nil ? free == 300 : dest!.phase == .released && free == 300, "an aborted migration's reservation is given back: \(String(describing: dest?.phase)) free \(free)") }
    }
}
