import Foundation
import Scheduling
import Testing
@testable import Experiments
@testable import Features
@testable import Twin

@Suite("Migration in the twin")
struct MigrationTwinTests {
    /// Four single-GPU replicas of a service whose engines run as many sequences as KV allows.
    func run(_ policy: String, drains: [(node: String, from: Double, until: Double)] = [], rps: Double = 6, reportEvery: Double = 0,
             staging: Bool = false, memoryHost: Bool = false, memoryUtilization: Double? = nil, until: Double = 600,
             failures: [NodeFailure] = [], rejoin: Double = 0, firstRoundAfter: Double = 0,
             roundLog: (@Sendable (Double, String) -> Void)? = nil) -> RunResult {
        var svc = ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1,
                              rateCurve: [RatePoint(time: 0, rps: rps)], meanPrefillTokens: 1000, meanDecodeTokens: 400, sloSeconds: 60, minReplicas: 4)
        svc.requestMix = [TokenCount(prefill: 600, decode: 50), TokenCount(prefill: 2000, decode: 1500), TokenCount(prefill: 1000, decode: 300)]
        svc.maxNumSeqs = 256
        if let u = memoryUtilization { svc.gpuMemoryUtilization = u }
        let requests = RequestStream.generate([svc], until: until, seed: 3)
        let nodes = (0..<4).map { NodeSlot(id: "n\($0)", gpuModel: "A100-80GB", gpuCount: 1) }
        var options = TwinOptions()
        options.requests = requests
        options.drains = drains
        options.failures = failures
        options.rejoinLatency = rejoin
        var m = MigrationSettings()
        m.policy = policy
        m.staging = staging
        options.migration = MigrationTwinModel.Settings(m, timeScale: 10)
        options.migration!.loadReportInterval = reportEvery
        options.migration!.roundLog = roundLog
        options.migration!.firstRoundAfter = firstRoundAfter
        if memoryHost {
            let tiers = [TiersTwinModel.Tier(kind: "dram", capacityBytes: 64 << 30, figures: TiersTwinModel.Settings.nominal("dram"))]
            options.tiers = TiersTwinModel.Settings(policy: "none", hosts: [TiersTwinModel.Host(node: "mem-0", tiers: tiers)],
                                                    linkBytesPerSecond: 12.5e9, kvBytesScale: 1.0 / 4096, lookupTimeout: 30, figuresSource: "nominal")
        }
        return DigitalTwin(nodes: nodes, workload: Workload(name: "svc", jobs: [], services: [svc]), kb: llamaA100KB, options: options)
            .run(policy: Policies.named("hybrid")!)
    }

    @Test("on load reports (every 2 trace s, as heartbeats at 10×) the policy decides on what replicas last reported: it still moves requests, not the same as on live loads, and every request finishes once")
    func reportedLoads() throws {
        let live = run("llumnix", rps: 9), reported = run("llumnix", rps: 9, reportEvery: 2)
        let count = { (r: RunResult) in r.migrations.filter { $0.key.hasPrefix("state/") }.reduce(0) { $0 + $1.value } }
        #expect(count(reported) > 0, "\(reported.migrations)")
        #expect(count(reported) != count(live), "the view changes the decisions: live \(live.migrations), reported \(reported.migrations)")
        #expect(reported.migrations["state/in-flight"] == nil)
        let s = try #require(reported.services.first)
        #expect(s.offeredRequests > 0 && (s.latencyP99 ?? .infinity).isFinite, "every request finished: \(s)")
    }

    @Test("--log-rounds: each policy round is logged as the testbed's coordinator logs it, one line per service and round, the moves it started among the decisions")
    func roundLog() throws {
        final class Lines: @unchecked Sendable { var all: [(Double, String)] = []; let lock = NSLock() }
        let lines = Lines()
        let r = run("llumnix", rps: 9, reportEvery: 2, roundLog: { t, l in lines.lock.lock(); lines.all.append((t, l)); lines.lock.unlock() })
        #expect(lines.all.count > 10)
        #expect(zip(lines.all, lines.all.dropFirst()).allSatisfy { $0.0 <= $1.0 }, "in time order")
        let first = try #require(lines.all.first?.1)
        #expect(first.contains("[") && first.contains(" hoq ") && first.contains(" run ") && first.contains(" hp ") && first.contains(" f ") && first.contains(" -> "), "\(first)")
        // Every migration the twin started was among the logged decisions (decisions may be more: a busy replica takes none).
        let decided = lines.all.map(\.1).joined(separator: "\n")
        for m in r.migrationRecords { #expect(decided.contains(m.request + " "), "\(m.request) not among the decisions") }
        #expect(!r.migrationRecords.isEmpty)
    }

    @Test("timing jitter (--twin-runs): run 0 is the model as set; each further run scales the control plane's latencies by 0.9–1.1, the same for the same run, not for another")
    func timingJitter() {
        var o = TwinOptions()
        o.serveLatency = 0.014; o.reportLatency = 0.1; o.startLatency = 0.1
        var m = MigrationTwinModel.Settings(MigrationSettings(), timeScale: 10)
        m.controlLatency = 0.03
        o.migration = m
        let zero = o.jittered(run: 0)
        #expect(zero.serveLatency == 0.014 && zero.reportLatency == 0.1 && zero.migration?.controlLatency == 0.03)
        let a = o.jittered(run: 1), b = o.jittered(run: 1), c = o.jittered(run: 2)
        #expect(a.serveLatency == b.serveLatency && a.migration?.controlLatency == b.migration?.controlLatency, "deterministic")
        #expect(a.serveLatency != c.serveLatency, "another run, another draw")
        for x in [a, c] {
            for (v, base) in [(x.serveLatency, 0.014), (x.reportLatency, 0.1), (x.startLatency, 0.1), (x.migration!.controlLatency, 0.03)] {
                #expect(v >= base * 0.9 && v <= base * 1.1, "\(v) against \(base)")
            }
        }
        #expect(o.jittered(run: 3, spread: 0).serveLatency == 0.014)
    }

    @Test("a restarted agent registers `rejoinLatency` after its node comes back, and the policy's rounds start `firstRoundAfter` the first arrival; jittered runs draw the rejoin within ±10 % (as the other latencies) and the round phase anywhere in the interval")
    func rejoinAndRoundPhase() throws {
        final class Lines: @unchecked Sendable { var all: [(Double, String)] = []; let lock = NSLock() }
        // n3 dies at 100 s and is back at 120 s; its new replica (s-r5) enters the rounds once it
        // has registered, started and reported.
        func rounds(rejoin: Double, firstRoundAfter: Double) -> [(Double, String)] {
            let lines = Lines()
            _ = run("llumnix", rps: 4, reportEvery: 2, until: 200, failures: [NodeFailure(node: "n3", at: 100, downFor: 20, detectedAfter: 2)],
                    rejoin: rejoin, firstRoundAfter: firstRoundAfter,
                    roundLog: { t, l in lines.lock.lock(); lines.all.append((t, l)); lines.lock.unlock() })
            return lines.all
        }
        func firstSeen(_ r: [(Double, String)]) throws -> Double { try #require(r.first { $0.1.contains("s-r5[") }?.0) }
        let prompt = rounds(rejoin: 0, firstRoundAfter: 0), late = rounds(rejoin: 30, firstRoundAfter: 0)
        let seenPrompt = try firstSeen(prompt), seenLate = try firstSeen(late)
        #expect(seenPrompt >= 120 && seenPrompt < 130, "\(seenPrompt)")
        #expect(seenLate >= 150 && seenLate < 160, "\(seenLate)")
        // The rounds keep their interval (2.5 s of trace at 10×), shifted by the phase.
        let shifted = rounds(rejoin: 0, firstRoundAfter: 1.25)
        // Each run's rounds all fall at one phase of the interval; the shifted run's is 1.25 s later.
        func phase(_ t: Double, from origin: Double) -> Double { ((t - origin).truncatingRemainder(dividingBy: 2.5) + 2.5).truncatingRemainder(dividingBy: 2.5) }
        let origin = try #require(prompt.first?.0), shiftedOrigin = try #require(shifted.first?.0)
        #expect(prompt.allSatisfy { min(phase($0.0, from: origin), 2.5 - phase($0.0, from: origin)) < 1e-6 })
        #expect(shifted.allSatisfy { min(phase($0.0, from: shiftedOrigin), 2.5 - phase($0.0, from: shiftedOrigin)) < 1e-6 })
        #expect(abs(phase(shiftedOrigin, from: origin) - 1.25) < 1e-6, "\(origin) \(shiftedOrigin)")

        var o = TwinOptions()
        o.rejoinLatency = 9
        var m = MigrationTwinModel.Settings(MigrationSettings(), timeScale: 10)
        m.firstRoundAfter = 1.25
        o.migration = m
        #expect(o.jittered(run: 0).rejoinLatency == 9 && o.jittered(run: 0).migration?.firstRoundAfter == 1.25, "run 0 as set")
        let draws = (1...20).map { o.jittered(run: $0) }
        #expect(draws.allSatisfy { $0.rejoinLatency >= 9 * 0.9 && $0.rejoinLatency <= 9 * 1.1 })
        #expect(Set(draws.map(\.rejoinLatency)).count > 1, "drawn, not fixed")
        let phases = draws.map { $0.migration!.firstRoundAfter }
        #expect(phases.allSatisfy { $0 >= 0 && $0 < m.interval })
        #expect(phases.min()! < m.interval / 4 && phases.max()! > m.interval * 3 / 4, "spread over the interval: \(phases)")
    }

    @Test("staging in the twin: a drain with every other replica short of room moves requests through the memory host instead of waiting; every request finishes once")
    func stagedDrain() throws {
        let drains = [(node: "n0", from: 60.0, until: 200.0)]
        let plain = run("none", drains: drains, rps: 9, memoryHost: true, memoryUtilization: 0.3, until: 150)
        let staged = run("none", drains: drains, rps: 9, staging: true, memoryHost: true, memoryUtilization: 0.3, until: 150)
        let off = run("none", drains: drains, rps: 9, staging: true, memoryHost: false, memoryUtilization: 0.3, until: 150)
        #expect(plain.migrations["staged"] == nil && off.migrations["staged"] == nil, "staging needs both the setting and a memory host")
        let n = try #require(staged.migrations["staged"], "\(staged.migrations)")
        #expect(n > 0 && (staged.migrations["reason/drain"] ?? 0) > (plain.migrations["reason/drain"] ?? 0),
                "plain \(plain.migrations), staged \(staged.migrations)")
        #expect((staged.tiers["staged_ins"] ?? 0) == n && (staged.tiers["swap_ins"] ?? 0) > 0, "\(staged.tiers)")
        #expect(staged.migrations["state/in-flight"] == nil)
        for r in [plain, staged] {
            let s = try #require(r.services.first)
            #expect(s.offeredRequests > 0 && (s.latencyP99 ?? .infinity).isFinite, "every request finished: \(s)")
        }
    }

    @Test("scale-down by migration: when the rate falls, a migrating policy empties the replicas it no longer needs before they stop; `none` stops them and sends their requests again")
    func scaleDown() throws {
        func run(_ policy: String) -> RunResult {
            // Two replicas for the rate at 0 s; from 1 s one is enough, and at 125 s (past the 120 s
            // scale-down window) the other retires while 12 long conversations still decode on both.
            var svc = ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1,
                                  rateCurve: [RatePoint(time: 0, rps: 40), RatePoint(time: 1, rps: 0.1), RatePoint(time: 125, rps: 0.1)],
                                  meanPrefillTokens: 800, meanDecodeTokens: 500, sloSeconds: 60)
            svc.maxNumSeqs = 256
            let requests = (0..<12).map { ServiceRequest(id: "long-\($0)", serviceID: "s", arrival: 2 + Double($0) * 0.5, prefill: 800, decode: 10000) }
            var options = TwinOptions()
            options.requests = requests
            var m = MigrationSettings(); m.policy = policy
            options.migration = MigrationTwinModel.Settings(m, timeScale: 10)
            let nodes = (0..<2).map { NodeSlot(id: "n\($0)", gpuModel: "A100-80GB", gpuCount: 1) }
            return DigitalTwin(nodes: nodes, workload: Workload(name: "svc", jobs: [], services: [svc]), kb: llamaA100KB, options: options)
                .run(policy: Policies.named("hybrid")!)
        }
        let none = run("none"), llumnix = run("llumnix")
        #expect(none.migrations.isEmpty, "\(none.migrations)")
        #expect((llumnix.migrations["reason/drain"] ?? 0) > 0, "retiring replicas are drained by migration: \(llumnix.migrations)")
        #expect(llumnix.migrations["state/in-flight"] == nil)
        for r in [none, llumnix] {
            let s = try #require(r.services.first)
            #expect((s.latencyP99 ?? .infinity).isFinite, "every request finished: \(s)")
        }
    }

    /// Service "s" of Llama-2-7b on one GPU a replica, its engines running as many sequences as KV allows.
    func llamaService(on gpu: String, rps: Double, minReplicas: Int) -> ServiceSpec {
        var svc = ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: gpu, gpusPerReplica: 1,
                              rateCurve: [RatePoint(time: 0, rps: rps)], meanPrefillTokens: 500, meanDecodeTokens: 100, sloSeconds: 60, minReplicas: minReplicas)
        svc.maxNumSeqs = 256
        return svc
    }

    @Test("a run's end names an engine that has no request yet holds KV blocks (blocks lost), but not one that is a move's destination, nor one with work")
    func lostBlocksNamed() {
        func load(used: Int, waiting: Int = 0, running: Int = 0) -> ServingEngine.Load {
            ServingEngine.Load(totalBlocks: 100, usedBlocks: used, headOfQueueDemand: 0, waiting: waiting,
                               running: (0..<running).map { ServingEngine.Load.Request(id: "q\($0)", blocks: 1, remaining: 1, generated: 1) })
        }
        let loads: [(replica: String, load: ServingEngine.Load)] = [("idle", load(used: 0)), ("leaky", load(used: 7)), ("reserved", load(used: 5)),
                                                                    ("busy", load(used: 9, running: 1)), ("queued", load(used: 3, waiting: 2))]
        #expect(DigitalTwin.lostBlocks(loads, reserving: ["reserved"]) == ["replica leaky: 7 KV blocks still held with no request on it (blocks lost)"])
        #expect(DigitalTwin.lostBlocks(loads, reserving: []).count == 2, "a reservation no move holds any longer is named too")
    }

    @Test("a run whose requests have all arrived and none finishes for the stall limit ends, naming what is left and where, instead of stepping engines for ever")
    func stuckRunEnds() throws {
        let svc = llamaService(on: "A100-80GB", rps: 1, minReplicas: 1)
        var options = TwinOptions()
        // One short request and one whose output takes far longer than the (test's tiny) limit.
        options.requests = [ServiceRequest(id: "short", serviceID: "s", arrival: 0, prefill: 100, decode: 10),
                            ServiceRequest(id: "long", serviceID: "s", arrival: 1, prefill: 100, decode: 100_000)]
        options.stallLimit = 60
        let nodes = [NodeSlot(id: "n0", gpuModel: "A100-80GB", gpuCount: 1)]
        let run = { DigitalTwin(nodes: nodes, workload: Workload(name: "svc", jobs: [], services: [svc]), kb: llamaA100KB, options: options).run(policy: Policies.named("hybrid")!) }
        let r = run()
        #expect(r.skipped.contains { $0.hasPrefix("requests: 1 never finished: none did for 60 s of trace") }, "\(r.skipped)")
        #expect(r.skipped.contains { $0.contains(": 1 running, 0 waiting") }, "names the replica holding it: \(r.skipped)")
        #expect(r.requests.first { $0.id == "short" }?.finished != nil && r.requests.first { $0.id == "long" }?.finished == nil)
        // Under the default limit the same run finishes both, and says nothing.
        options.stallLimit = TwinOptions().stallLimit
        let full = run()
        #expect(full.skipped.isEmpty && full.requests.allSatisfy { $0.finished != nil }, "\(full.skipped)")
    }

    @Test("a service no replica can be planned for (no profile on its GPU) ends the run naming why, instead of migration rounds spinning for ever")
    func unplannedServiceEnds() throws {
        let svc = llamaService(on: "A10", rps: 2, minReplicas: 2)
        var options = TwinOptions()
        options.requests = (0..<5).map { ServiceRequest(id: "q\($0)", serviceID: "s", arrival: Double($0), prefill: 500, decode: 100) }
        options.migration = MigrationTwinModel.Settings(MigrationSettings(), timeScale: 10)
        options.migration!.loadReportInterval = 2   // its reports must not keep the run going either
        let nodes = (0..<2).map { NodeSlot(id: "n\($0)", gpuModel: "A10", gpuCount: 1) }
        let r = DigitalTwin(nodes: nodes, workload: Workload(name: "svc", jobs: [], services: [svc]), kb: llamaA100KB, options: options)
            .run(policy: Policies.named("hybrid")!)
        #expect(r.skipped.contains { $0.contains("service s: no inference profile for Llama-2-7b on 1xA10") && $0.contains("1xA100-80GB") }, "\(r.skipped)")
        #expect(r.services.isEmpty, "no outcome is made up for a service that never ran: \(r.services)")
    }

    @Test("Llumnix's dispatching in the twin takes each load report once, as it comes (as the coordinator does): a later round does not put back the blocks the router took off for requests sent since")
    func dispatchOnReports() {
        var replicas = InferenceTwinModel()
        replicas.start("r1", node: "n1", model: llamaA100, batch: 256)
        replicas.start("r2", node: "n2", model: llamaA100, batch: 256)
        replicas.serve("r1", [ServiceRequest(id: "busy", serviceID: "s", arrival: 0, prefill: 16, decode: 100_000)], at: 0)
        let router = RequestRouter()
        router.replicaReady("r1", service: "s", node: "n1", batch: 256)
        router.replicaReady("r2", service: "s", node: "n2", batch: 256)
        let services = ["s": ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1, rateCurve: [RatePoint(time: 0, rps: 1)],
                                         meanPrefillTokens: 100, meanDecodeTokens: 10, sloSeconds: 10)]
        var m = MigrationSettings()
        m.policy = "dispatch"
        var settings = MigrationTwinModel.Settings(m, timeScale: 10)
        settings.loadReportInterval = 2
        var twin = MigrationTwinModel(settings: settings)!
        twin.reportLoads(at: 1, replicas: &replicas, router: router)
        // r2 is empty, r1 runs one short request: the first big prompt goes to r2 …
        _ = router.submit([ServiceRequest(id: "q0", serviceID: "s", arrival: 1, prefill: 3200, decode: 10)], services: services)
        #expect(router.route(now: 1.1).map(\.replica) == ["r2"])
        // … which then holds 200 blocks for one request, less free per request than r1: the next goes
        // to r1, round or no round before it (the round must not restore r2's report).
        _ = twin.round(at: 1.5, replicas: &replicas, router: router, health: { _ in .alive }, slo: { _ in 60 })
        _ = router.submit([ServiceRequest(id: "q1", serviceID: "s", arrival: 1.6, prefill: 3200, decode: 10)], services: services)
        #expect(router.route(now: 1.6).map(\.replica) == ["r1"])
    }

    @Test("a destination with no room for a stage's further blocks refuses the stage and gives its whole reservation back; the request stays on its source (kept, the reservation left a KV-bound replica unable to admit its queue for ever)")
    func refusedStageFreesReservation() throws {
        struct MoveOne: MigrationPolicy {
            let name = "move-one"
            var migrates: Bool { true }
            func decide(_ instances: [InstanceLoad], costs: MigrationCosts, busy: Set<String>) -> [MigrationDecision] {
                busy.isEmpty && instances.contains { $0.id == "r1" && !$0.running.isEmpty } ? [MigrationDecision(request: "q", from: "r1", to: "r2", reason: .balance)] : []
            }
        }
        var replicas = InferenceTwinModel()
        replicas.start("r1", node: "n1", model: llamaA100, batch: 256)
        replicas.start("r2", node: "n2", model: llamaA100, batch: 256)
        let router = RequestRouter()
        router.replicaReady("r1", service: "s", node: "n1", batch: 256)
        router.replicaReady("r2", service: "s", node: "n2", batch: 256)
        let services = ["s": ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1, rateCurve: [RatePoint(time: 0, rps: 1)],
                                         meanPrefillTokens: 100, meanDecodeTokens: 10, sloSeconds: 60)]
        _ = router.submit([ServiceRequest(id: "q", serviceID: "s", arrival: 0, prefill: 2000, decode: 5000)], services: services)
        for b in router.route(now: 0) { replicas.serve(b.replica, b.requests, at: 0) }
        #expect(replicas.place(of: "q", in: "r1", at: 0.1) != nil)
        // A slow KV link (100 MB/s of trace): the request grows by many blocks while its first stage copies.
        var m = MigrationSettings()
        m.kvLinkBytesPerSecond = 100e6
        var twin = MigrationTwinModel(settings: MigrationTwinModel.Settings(m, timeScale: 10), policy: MoveOne())
        var events = twin.round(at: 5, replicas: &replicas, router: router, health: { _ in .alive }, slo: { _ in 60 })
        #expect(twin.inFlight == 1 && !events.isEmpty)
        let reserved = replicas.replicas["r2"]!.engine.usedBlocks
        #expect(reserved > 0, "the destination set blocks aside")
        // Everything else r2 has is taken meanwhile: no room for the blocks the request added.
        let rest = replicas.replicas["r2"]!.engine.freeBlocks
        let took = replicas.reserve(rest, in: "r2")
        #expect(took)
        while let next = events.min(by: { $0.at < $1.at }) {
            events.removeAll { $0.at == next.at && $0.id == next.id }
            events += twin.step(next.id, at: next.at, replicas: &replicas, router: router)
        }
        #expect(twin.inFlight == 0)
        let o = try #require(twin.outcomes.last)
        #expect(o.state == "aborted" && (o.detail ?? "").contains("no room"), "\(o)")
        #expect(replicas.replicas["r2"]!.engine.usedBlocks == rest, "the migration's \(reserved) blocks are back in r2's pool")
        #expect(replicas.place(of: "q", in: "r1", at: 30) == .running, "it keeps running on its source")
        #expect(router.records["q"]?.replica == "r1" && router.migrating.isEmpty)
    }

    @Test("load reports come in staggered groups, as agents report on their own clocks: a round sees a group's replicas once that group has reported, and a replica that has not reported yet (just started) not at all")
    func staggeredReports() throws {
        let ids = (1...8).map { "r\($0)" }
        let phases = ids.map(MigrationTwinModel.reportPhase(of:))
        #expect(phases.allSatisfy { (0..<MigrationTwinModel.reportPhases).contains($0) })
        #expect(Set(phases).count > 1, "the ids spread over groups: \(phases)")
        #expect(ids.map(MigrationTwinModel.reportPhase(of:)) == phases, "stable")
        var replicas = InferenceTwinModel()
        let router = RequestRouter()
        for (i, id) in ids.enumerated() {
            replicas.start(id, node: "n\(i)", model: llamaA100, batch: 256)
            router.replicaReady(id, service: "s", node: "n\(i)", batch: 256)
        }
        final class Seen: @unchecked Sendable { var lines: [String] = [] }
        let seen = Seen()
        var m = MigrationSettings()
        m.policy = "llumnix"
        var settings = MigrationTwinModel.Settings(m, timeScale: 10)
        settings.loadReportInterval = 2
        settings.roundLog = { _, line in seen.lines.append(line) }
        var twin = MigrationTwinModel(settings: settings)!
        func inRound() -> Set<String> {
            seen.lines = []
            _ = twin.round(at: 1, replicas: &replicas, router: router, health: { _ in .alive }, slo: { _ in 60 })
            return Set(ids.filter { id in seen.lines.contains { $0.contains(id + "[") } })
        }
        #expect(inRound().isEmpty, "no replica has reported")
        // The largest group alone, then every group.
        let group = try #require((0..<MigrationTwinModel.reportPhases).max { a, b in phases.filter { $0 == a }.count < phases.filter { $0 == b }.count })
        let members = Set(zip(ids, phases).filter { $0.1 == group }.map(\.0))
        twin.reportLoads(at: 0.5, phase: group, replicas: &replicas, router: router)
        #expect(inRound() == (members.count >= 2 ? members : []), "only group \(group) reported: \(members)")
        for p in 0..<MigrationTwinModel.reportPhases { twin.reportLoads(at: 0.6, phase: p, replicas: &replicas, router: router) }
        #expect(inRound() == Set(ids))
        // A replica that stops serving is forgotten at the next report of any group: started again
        // under its id, it is left out until its own group reports, not seen in its old load.
        replicas.stop("r1", at: 0.7)
        let other = (phases[0] + 1) % MigrationTwinModel.reportPhases
        twin.reportLoads(at: 0.7, phase: other, replicas: &replicas, router: router)
        #expect(!inRound().contains("r1"))
        replicas.start("r1", node: "n0", model: llamaA100, batch: 256)
        #expect(!inRound().contains("r1"), "its report from before the stop is gone")
        twin.reportLoads(at: 0.8, phase: phases[0], replicas: &replicas, router: router)
        #expect(inRound().contains("r1"))
    }

    @Test("the same policies move requests on virtual time; every request finishes once; a drained node is emptied even under `none`")
    func policies() throws {
        let none = run("none")
        #expect(none.migrations.isEmpty, "none moves nothing without a drain: \(none.migrations)")
        // Each request's outcome comes back (the twin's requests.csv): all answered, on a replica.
        #expect(!none.requests.isEmpty && none.requests.allSatisfy { $0.ttft != nil && $0.replica != nil && $0.finished != nil })
        #expect(Double(none.requests.count) == none.services.first?.offeredRequests)
        let drained = run("none", drains: [("n3", 120, 400)])
        #expect((drained.migrations["reason/drain"] ?? 0) > 0 && drained.migrations.keys.filter { $0.hasPrefix("reason/") } == ["reason/drain"], "\(drained.migrations)")
        #expect(drained.migrations["state/in-flight"] == nil)
        let llumnix = run("llumnix", rps: 9)
        let moved = llumnix.migrations.filter { $0.key.hasPrefix("state/") }.reduce(0) { $0 + $1.value }
        #expect(moved > 0, "KV-bound replicas under load: Llumnix moves requests")
        #expect(llumnix.migrations["state/in-flight"] == nil)
        #expect(llumnix.migrationDowntimes.allSatisfy { $0 >= 0 && $0 < 5 }, "\(llumnix.migrationDowntimes.max() ?? 0)")
        // Each migration's record (the twin's migrations.csv): the counts', between two of the nodes, ended after it started.
        #expect(llumnix.migrationRecords.count == moved)
        #expect(Dictionary(grouping: llumnix.migrationRecords, by: \.reason).mapValues(\.count) == llumnix.migrations.filter { $0.key.hasPrefix("reason/") }
            .reduce(into: [String: Int]()) { $0[String($1.key.dropFirst(7))] = $1.value })
        #expect(llumnix.migrationRecords.allSatisfy { r in ["n0", "n1", "n2", "n3"].contains(r.from) && ["n0", "n1", "n2", "n3"].contains(r.to) && r.from != r.to
                                                       && r.ended.map { $0 >= r.started } == true && r.tokens > 0 }, "\(llumnix.migrationRecords)")
        for r in [none, drained, llumnix] {
            let s = try #require(r.services.first)
            #expect(s.offeredRequests > 0 && (s.latencyP99 ?? .infinity).isFinite, "every request finished: \(s)")
        }
    }
}

@Suite("Router dispatch and migration bookkeeping")
struct RouterMigrationTests {
    func router(_ mode: RequestRouter.Dispatch) -> RequestRouter {
        let r = RequestRouter()
        r.dispatch = mode
        r.replicaReady("r1", service: "s", node: "a", batch: 4)
        r.replicaReady("r2", service: "s", node: "b", batch: 4)
        return r
    }
    let services = ["s": ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1, rateCurve: [RatePoint(time: 0, rps: 1)],
                                     meanPrefillTokens: 100, meanDecodeTokens: 10, sloSeconds: 10)]

    @Test("freeness dispatch sends to the replica with the most free KV per running request, taking each prompt off until the next report")
    func freeness() {
        let r = router(.freeness)
        r.updateKV("r1", freeBlocks: 100, running: 10)   // 10 per request
        r.updateKV("r2", freeBlocks: 60, running: 2)     // 30 per request
        _ = r.submit((0..<3).map { ServiceRequest(id: "q\($0)", serviceID: "s", arrival: 0, prefill: 320, decode: 10) }, services: services)
        let routes = Dictionary(uniqueKeysWithValues: r.route(now: 1).map { ($0.replica, $0.requests.map(\.id)) })
        // r2: 30, then (60−20)/3 = 13.3 → q1 also r2, then (40−20)/4 = 5 < 10 → q2 to r1.
        #expect(routes == ["r2": ["q0", "q1"], "r1": ["q2"]], "\(routes)")
        // One replica has reported and the other not yet (a fresh one): a burst is shared between them,
        // the silent one counted as free as the reported one, less what it has been sent.
        let fresh = router(.freeness)
        fresh.updateKV("r1", freeBlocks: 1000, running: 0)
        _ = fresh.submit((0..<6).map { ServiceRequest(id: "b\($0)", serviceID: "s", arrival: 0, prefill: 320, decode: 10) }, services: services)
        #expect(fresh.route(now: 1).map(\.requests.count) == [3, 3])
        // Replicas short of blocks for their waiting requests (negative free) rank by the shortfall,
        // below any with room: 40 short with 2 running is worse than 10 short with 50 (dividing the
        // shortfall by the running count would pick the first).
        let short = router(.freeness)
        short.updateKV("r1", freeBlocks: -40, running: 2)
        short.updateKV("r2", freeBlocks: -10, running: 50)
        _ = short.submit([ServiceRequest(id: "s0", serviceID: "s", arrival: 0, prefill: 16, decode: 10)], services: services)
        #expect(short.route(now: 1).map(\.replica) == ["r2"])
        let jsq = router(.shortestQueue)
        _ = jsq.submit((0..<2).map { ServiceRequest(id: "q\($0)", serviceID: "s", arrival: 0, prefill: 320, decode: 10) }, services: services)
        #expect(jsq.route(now: 1).map(\.requests.count) == [1, 1])
    }

    @Test("a migrating request whose source is lost waits for the migration's outcome; moved, it counts on its destination; closed replicas take nothing new")
    func migratingHeld() {
        let r = router(.shortestQueue)
        _ = r.submit([ServiceRequest(id: "q", serviceID: "s", arrival: 0, prefill: 10, decode: 10)], services: services)
        let first = r.route(now: 1)[0].replica
        let other = first == "r1" ? "r2" : "r1"
        r.migrationStarted("q", to: other)
        r.replicaGone(first)
        #expect(r.held == ["q"] && r.route(now: 2).isEmpty, "held, not sent again")
        r.moved("q", to: other, node: "b")
        #expect(r.held.isEmpty && r.records["q"]!.replica == other && r.records["q"]!.migrations == 1 && r.outstanding(on: other) == ["q"])
        // Another one whose migration ends without moving it, after its source was lost: queued again.
        _ = r.submit([ServiceRequest(id: "p", serviceID: "s", arrival: 0, prefill: 10, decode: 10)], services: services)
        #expect(r.route(now: 3).first?.replica == other)
        r.migrationStarted("p", to: "elsewhere")
        r.replicaGone(other)
        #expect(r.migrationEnded("p"))
        r.replicaReady("r3", service: "s", node: "c", batch: 4)
        r.setClosed("r3", true)
        #expect(r.route(now: 4).isEmpty, "the only replica is closed")
        r.setClosed("r3", false)
        #expect(r.route(now: 5).flatMap { $0.requests.map(\.id) }.sorted() == ["p", "q"])
    }
}
