import Scheduling
import Testing

@Suite("Migration policies")
struct MigrationPolicyTests {
    let costs = MigrationCosts(blockBytes: 8 * 1_048_576, bandwidthBytesPerSecond: 2e9)
    func busy(_ id: String, node: String = "n", used: Int, running: [RequestLoad], demand: Int = 0, health: InstanceLoad.Health = .alive) -> InstanceLoad {
        InstanceLoad(id: id, node: node, totalBlocks: 1000, usedBlocks: used, headOfQueueDemand: demand, running: running, health: health)
    }
    func reqs(_ prefix: String, _ blocks: [Int], slack: Double = 100, high: Bool = false) -> [RequestLoad] {
        blocks.enumerated().map { RequestLoad(id: "\(prefix)\($0.offset)", blocks: $0.element, remainingTokens: 100, highPriority: high, sloSlack: slack) }
    }

    @Test("none never migrates")
    func none() {
        #expect(MigrationPolicies.named("none")!.decide([busy("a", used: 990, running: reqs("a", [99, 99])), busy("b", used: 0, running: [])], costs: costs, busy: []).isEmpty)
        #expect(MigrationPolicies.named("nope") == nil && MigrationPolicies.names == ["none", "dispatch", "llumnix", "slack"])
        #expect(!MigrationPolicies.named("dispatch")!.migrates && MigrationPolicies.named("dispatch")!.dispatchesByFreeness && !NoMigration().dispatchesByFreeness)
    }

    @Test("llumnix: freeness from virtual usage pairs the least free with the freest and moves the source's cheapest request")
    func llumnix() {
        let p = LlumnixMigration()
        let hot = busy("a", used: 950, running: reqs("a", [200, 50, 300, 400])), cold = busy("b", used: 100, running: reqs("b", [100]))
        #expect(p.freeness(hot) == 12.5 && p.freeness(cold) == 900)
        // 12.5 is above the source threshold: nothing moves until the head of the queue needs room.
        #expect(p.decide([hot, cold], costs: costs, busy: []).isEmpty)
        let full = busy("a", used: 950, running: reqs("a", [200, 50, 300, 400]), demand: 100)
        #expect(p.decide([full, cold], costs: costs, busy: []) == [MigrationDecision(request: "a1", from: "a", to: "b", reason: .makeRoom)])
        // The request already moving is not picked again; high priority adds headroom to the usage.
        #expect(p.decide([full, cold], costs: costs, busy: ["a1"]).first?.request == "a0")
        #expect(p.virtualUsage(busy("c", used: 100, running: reqs("c", [10, 10], high: true))) == 100 + 2 * 64)
        // A draining instance is infinitely used: its requests move even when it is nearly empty.
        let drained = busy("d", used: 10, running: reqs("d", [10]), health: .draining)
        #expect(p.decide([drained, cold], costs: costs, busy: []) == [MigrationDecision(request: "d0", from: "d", to: "b", reason: .drain)])
        #expect(p.decide([drained], costs: costs, busy: []).isEmpty, "nowhere to go")
    }

    @Test("a drain with staging does not wait for room: with no instance able to hold the request, it goes to the one with the most free blocks (its KV waits on a memory host); without staging it stays")
    func drainWithStaging() {
        let drained = busy("d", used: 300, running: reqs("d", [300]), health: .draining)
        let fullA = busy("a", used: 990, running: reqs("a", [500, 490])), fullB = busy("b", used: 950, running: reqs("b", [950]), demand: 20)
        var staged = costs; staged.staging = true
        for p in [LlumnixMigration() as MigrationPolicy, SlackAwareMigration()] {
            #expect(p.decide([drained, fullA, fullB], costs: costs, busy: []).isEmpty, "\(p.name): nowhere with room")
            #expect(p.decide([drained, fullA, fullB], costs: staged, busy: []) == [MigrationDecision(request: "d0", from: "d", to: "b", reason: .drain)],
                    "\(p.name): b has 30 free after its queue's head, a 10")
            // An instance with room is still preferred.
            let roomy = busy("c", used: 600, running: reqs("c", [600]))
            #expect(p.decide([drained, fullA, roomy], costs: staged, busy: []).first?.to == "c")
        }
    }

    @Test("slack-aware: suspect nodes drain first, least slack first; for balance only requests with slack move, the most blocks freed per copy second")
    func slackAware() {
        let p = SlackAwareMigration()
        let cold = busy("b", used: 100, running: [])
        let suspect = busy("s", used: 300, running: reqs("s", [100, 100], slack: 5) + [RequestLoad(id: "late", blocks: 100, remainingTokens: 10, sloSlack: 0.5)], health: .suspect)
        #expect(p.decide([suspect, cold], costs: costs, busy: []) == [MigrationDecision(request: "late", from: "s", to: "b", reason: .drain)])
        #expect(LlumnixMigration().decide([suspect, cold], costs: costs, busy: []).isEmpty, "Llumnix does not read the failure detector")
        var hot = busy("a", used: 995, running: [RequestLoad(id: "tight", blocks: 10, remainingTokens: 2000, sloSlack: 1),
                                                  RequestLoad(id: "big", blocks: 400, remainingTokens: 10, sloSlack: 50),
                                                  RequestLoad(id: "grower", blocks: 20, remainingTokens: 1600, sloSlack: 50)], demand: 50)
        // "tight" would be cheapest but has no slack; "grower" frees 120 blocks for 20 copied.
        #expect(p.decide([hot, cold], costs: costs, busy: []).first?.request == "grower")
        hot.running.removeAll { $0.id == "grower" }
        #expect(p.decide([hot, cold], costs: costs, busy: []).first?.request == "big")
    }
}

@Suite("Scheduler: scale-down by migration")
struct RetireTests {
    @Test("with retire on, a replica no longer needed keeps its GPUs and takes no new work until it is empty (or past its deadline), then stops")
    func retire() {
        let kb = llamaA100KB
        let svc = ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1,
                              rateCurve: [RatePoint(time: 0, rps: 30), RatePoint(time: 10, rps: 0.1)], meanPrefillTokens: 500, meanDecodeTokens: 100, sloSeconds: 20)
        var s = Scheduler(policy: Policies.named("hybrid")!, kb: kb, services: [svc])
        s.state.addNode(NodeSlot(id: "a", gpuModel: "A100-80GB", gpuCount: 2))
        s.scaleDownAfter = 0
        s.retireByMigration = true
        _ = s.step(now: 0)
        #expect(s.replicas(of: "s").count == 2)
        let actions = s.step(now: 20)
        let retired = actions.compactMap { if case .retireReplica(let id, _, _) = $0 { return id }; return nil }
        #expect(retired.count == 1 && !actions.contains { if case .stopReplica = $0 { return true }; return false }, "\(actions)")
        #expect(s.replicas(of: "s").count == 2 && s.state.free.totalFree == 0, "it keeps its GPU while it empties")
        #expect(s.step(now: 30).isEmpty, "not retired twice, nothing new started in its place")
        #expect(s.retirable(now: 40, isEmpty: { _ in false }).isEmpty)
        #expect(s.retirable(now: 40, isEmpty: { _ in true }) == retired)
        #expect(s.retirable(now: 20 + s.retireDeadline, isEmpty: { _ in false }) == retired, "the deadline stops it anyway")
        s.retired(retired[0])
        #expect(s.replicas(of: "s").count == 1 && s.state.free.totalFree == 1 && s.retiring.isEmpty)
    }
}
