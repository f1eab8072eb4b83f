import Foundation
import Protocol
import Scheduling
import Twin
import Testing
@testable import Coordinator
@testable import Features
@testable import Experiments

// Inference services on the testbed: the emulated replica, the request stream, the coordinator's
// router and its store, and the spec checks.

private var serviceKB: KnowledgeBase { llamaA100KB }

private func llamaModel() throws -> InferenceModel {
    try #require(InferenceModel(kb: serviceKB, model: "Llama-2-7b", gpuModel: "A100-80GB", tensorParallel: 1))
}

private func request(_ id: String, _ service: String = "s", arrival: Double = 0, prefill: Int = 500, decode: Int = 100) -> ServiceRequest {
    ServiceRequest(id: id, serviceID: service, arrival: arrival, prefill: prefill, decode: decode)
}

private func result(_ id: String, replica: String, finishedAt: Double) -> RequestRouter.Completion {
    RequestRouter.Completion(requestID: id, replicaID: replica, finished: finishedAt, queued: 0, service: 0)
}

@Suite("Inference services")
struct ServiceTests {
    @Test("the operating point the scheduler plans with is about what the serving engine delivers at full batch")
    func operatingPointOnTheEngine() throws {
        let model = try llamaModel()
        #expect(model.latency(prefill: 500, decode: 100, batch: 64) > model.latency(prefill: 500, decode: 100, batch: 1))
        let op = try #require(model.operatingPoint(prefill: 500, decode: 100, slo: 20))
        var engine = ServingEngine(model: model, config: ServingEngine.Config(maxRunning: op.batch))
        let n = op.batch * 20
        for i in 0..<n { _ = engine.add(id: "q\(i)", prompt: 500, decode: 100, at: Double(i) / (op.requestsPerSecond * 2)) }
        let done = engine.takeFinished(by: .infinity)
        let rate = Double(done.count) / done.map(\.finished).max()!
        #expect(done.count == n)
        // Measured here: 18.1 req/s against the plan's 17.6 at batch 128.
        #expect(rate > op.requestsPerSecond * 0.85 && rate < op.requestsPerSecond * 1.15, "\(rate) vs \(op.requestsPerSecond)")
    }

    @Test("requests follow the rate curve, draw tokens from the mix, and are the same for the same seed")
    func requestStream() {
        var s = ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1,
                            rateCurve: [RatePoint(time: 0, rps: 2), RatePoint(time: 1000, rps: 0), RatePoint(time: 2000, rps: 8)],
                            meanPrefillTokens: 500, meanDecodeTokens: 100, sloSeconds: 20)
        s.requestMix = [TokenCount(prefill: 10, decode: 20), TokenCount(prefill: 30, decode: 40)]
        let a = RequestStream.generate([s], until: 3000, seed: 3)
        let first = a.filter { $0.arrival < 1000 }.count, quiet = a.filter { $0.arrival >= 1000 && $0.arrival < 2000 }.count
        let last = a.filter { $0.arrival >= 2000 }.count
        #expect(abs(Double(first) - 2000) < 4 * 2000.0.squareRoot(), "\(first)")
        #expect(quiet == 0)
        #expect(abs(Double(last) - 8000) < 4 * 8000.0.squareRoot(), "\(last)")
        #expect(a.allSatisfy { s.requestMix.contains(TokenCount(prefill: $0.prefill, decode: $0.decode)) })
        #expect(Set(a.map(\.id)).count == a.count)
        #expect(a == RequestStream.generate([s], until: 3000, seed: 3))
        #expect(a != RequestStream.generate([s], until: 3000, seed: 4))
    }

    @Test("the router holds requests until they arrive, sends each to the replica with the fewest outstanding, and a lost replica's requests go first elsewhere")
    func router() {
        let svc = ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1, rateCurve: [RatePoint(time: 0, rps: 1)],
                              meanPrefillTokens: 500, meanDecodeTokens: 100, sloSeconds: 20)
        let r = RequestRouter()
        let sub = r.submit([request("q1", arrival: 1), request("q2", arrival: 2), request("q3", arrival: 3), request("q4", arrival: 50),
                            request("bad", "nope"), request("q1", arrival: 1)], services: ["s": svc])
        #expect(sub.accepted == 4 && sub.duplicates == 1 && sub.rejected == ["bad: unknown service 'nope'"])
        #expect(r.route(now: 10).isEmpty)   // no replica yet
        r.replicaReady("s-r1", service: "s", node: "n1", batch: 1)
        r.replicaReady("s-r2", service: "s", node: "n2", batch: 1)
        let routes = r.route(now: 10)
        // q1 → r1, q2 → r2 (fewest outstanding), q3 → r1 (ties by id); q4 has not arrived.
        #expect(routes.map(\.replica) == ["s-r1", "s-r2"])
        #expect(routes[0].requests.map(\.id) == ["q1", "q3"] && routes[1].requests.map(\.id) == ["q2"])
        // q4 arrives: r2 has room (each replica holds up to 2 × batch), r1 does not.
        let later = r.route(now: 60)
        #expect(later.count == 1 && later[0].replica == "s-r2" && later[0].requests.map(\.id) == ["q4"])
        // r1's node dies: q1 and q3 wait again and go to r2 as it frees, oldest first.
        #expect(r.replicaGone("s-r1") == ["q1", "q3"])
        #expect(r.route(now: 60).isEmpty)
        let settled = r.complete([result("q2", replica: "s-r2", finishedAt: 25)], node: "n2", slo: { _ in 20 })
        #expect(settled == ["q2"])
        let again = r.route(now: 60)
        #expect(again.count == 1 && again[0].replica == "s-r2" && again[0].requests.map(\.id) == ["q1"])
        // First result wins; a late duplicate (from the dead replica) is only settled.
        _ = r.complete([result("q1", replica: "s-r2", finishedAt: 70)], node: "n2", slo: { _ in 20 })
        #expect(r.complete([result("q1", replica: "s-r1", finishedAt: 9)], node: "n1", slo: { _ in 20 }) == ["q1"])
        let q1 = r.records["q1"]!, q2 = r.records["q2"]!
        #expect(q1.finished == 70 && q1.latency == 69 && !q1.withinSLO && q1.attempts == 2)
        #expect(q2.latency == 23 && !q2.withinSLO)
        #expect(r.route(now: 70).flatMap { $0.requests.map(\.id) } == ["q3"])
        _ = r.complete([result("q4", replica: "s-r2", finishedAt: 60)], node: "n2", slo: { _ in 20 })
        let t = r.tally()["s"]!
        #expect(t.submitted == 4 && t.completed == 3 && t.withinSLO == 1 && t.resent == 2)
    }

    @Test("without a hold at the router every arrived request goes to a replica at once (join-shortest-queue), past twice its batch")
    func routerWithoutHold() {
        let svc = ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1, rateCurve: [RatePoint(time: 0, rps: 1)],
                              meanPrefillTokens: 500, meanDecodeTokens: 100, sloSeconds: 20)
        let held = RequestRouter(), open = RequestRouter()
        open.holdFactor = nil
        for r in [held, open] {
            _ = r.submit((1...7).map { request("q\($0)", arrival: Double($0)) }, services: ["s": svc])
            r.replicaReady("s-r1", service: "s", node: "n1", batch: 1)
            r.replicaReady("s-r2", service: "s", node: "n2", batch: 1)
        }
        // Held: two per replica (2 × batch 1), three wait at the router.
        #expect(held.route(now: 10).reduce(0) { $0 + $1.requests.count } == 4)
        // Not held: all seven go out, alternating between the replicas by outstanding count.
        let routes = open.route(now: 10)
        #expect(routes.map(\.replica) == ["s-r1", "s-r2"])
        #expect(routes[0].requests.map(\.id) == ["q1", "q3", "q5", "q7"] && routes[1].requests.map(\.id) == ["q2", "q4", "q6"])
        #expect(open.route(now: 10).isEmpty)
    }

    @Test("services, replicas and requests survive a coordinator restart; unfinished requests are sent again, to their own replica when it is still there")
    func storeRoundTrip() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("strato-svc-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let svc = ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1, rateCurve: [RatePoint(time: 0, rps: 1)],
                              meanPrefillTokens: 500, meanDecodeTokens: 100, sloSeconds: 20)
        let r = RequestRouter()
        _ = r.submit([request("q1", arrival: 1), request("q2", arrival: 2)], services: ["s": svc])
        r.replicaReady("s-r1", service: "s", node: "n1", batch: 4)
        _ = r.route(now: 5)
        _ = r.complete([result("q1", replica: "s-r1", finishedAt: 4)], node: "n1", slo: { _ in 20 })
        let placement = Placement(nodeID: "n1", gpus: [0], key: ConfigKey(model: "Llama-2-7b", task: "inference", gpuModel: "A100-80GB", gpuCount: 1, batchPerGPU: 0))
        do {
            let store = try StateStore(directory: dir, schemas: SchedulingController.storeSchema)
            try store.saveService(svc)
            try store.saveReplica(ReplicaRecord(id: "s-r1", serviceID: "s", placement: placement), ready: true)
            try store.saveRequests(r.takeDirty())
        }
        let store = try StateStore(directory: dir, schemas: SchedulingController.storeSchema)
        #expect(try store.loadServices() == [svc])
        #expect(try store.loadReplicas().map(\.1) == [true])
        let back = RequestRouter()
        for rec in try store.loadRequests() { back.restore(rec) }
        #expect(back.records["q1"]?.latency == 3 && back.records["q1"]?.withinSLO == true)
        // q2 was on a replica when the coordinator stopped: it waits and goes out again.
        back.replicaReady("s-r1", service: "s", node: "n1", batch: 4)
        #expect(back.route(now: 10).flatMap { $0.requests.map(\.id) } == ["q2"])
        #expect(back.records["q2"]?.attempts == 2 && back.tally()["s"]?.resent == 1)
        // Replicas restored first (as the coordinator does): q2 stays on s-r1 and goes back there
        // only (its agent serves a request once), not to another replica.
        let affine = RequestRouter()
        affine.replicaReady("s-r1", service: "s", node: "n1", batch: 4)
        affine.replicaReady("s-r2", service: "s", node: "n2", batch: 4)
        for rec in try store.loadRequests() { affine.restore(rec) }
        let again = affine.route(now: 10)
        #expect(again.count == 1 && again[0].replica == "s-r1" && again[0].requests.map(\.id) == ["q2"], "\(again)")
        #expect(affine.records["q2"]?.attempts == 1 && affine.outstanding(on: "s-r1") == ["q2"])
        #expect(affine.route(now: 11).isEmpty, "sent back once")
    }

    @Test("the coordinator refuses services it cannot serve, naming why")
    func serviceSubmission() {
        let m = JobManager(policy: Policies.named("hybrid")!, kb: serviceKB, timeScale: 10, t0Wall: 0)
        func sub(_ id: String, model: String = "Llama-2-7b", gpu: String = "A100-80GB", slo: Double = 20) -> ServiceSubmission {
            var s = ServiceSubmission()
            s.serviceID = id; s.model = model; s.gpuModel = gpu; s.gpusPerReplica = 1; s.sloSeconds = slo
            s.meanPrefillTokens = 500; s.meanDecodeTokens = 100
            var p = RateCurvePoint(); p.time = 0; p.rps = 1
            s.rateCurve = [p]
            return s
        }
        let (ok, rejected) = m.submit(services: [sub("a"), sub("a"), sub("b", model: "GPT-9"), sub("c", gpu: "Z80"), sub("d", slo: 0.001), sub("e", slo: 0)])
        #expect(ok.map(\.id) == ["a"])
        #expect(rejected.count == 5)
        #expect(rejected[0] == "a: a service with this id exists")
        #expect(rejected[1].contains("unknown model 'GPT-9'") && rejected[2].contains("unknown GPU model 'Z80'"))
        #expect(rejected[3].contains("cannot meet a 0.001 s SLO"), "\(rejected[3])")
        #expect(rejected[4].contains("slo_seconds > 0"))
    }

    @Test("service specs: the GPU must exist in the topology, and the time scale must leave the SLO room", arguments: [
        ("workload: {kind: scheduling, hours: 1, services: {rps: 2, gpu: H100}}\ntime_scale: 10\n", 4, "no GPU node of the topology has that model"),
        ("workload: {kind: scheduling, hours: 1, services: {rps: 2, gpu: A100-80GB}}\ntime_scale: 1000\n", 5, "too high for services with a 20 s SLO"),
        ("workload: {kind: scheduling, hours: 1, services: {gpu: A100-80GB}}\n", 4, "services need 'rps'"),
        ("workload: {kind: scheduling, hours: 1, services: {rps: 2, gpu: Z80}}\n", 4, "unknown GPU model 'Z80'"),
        ("workload: {kind: idle, services: {rps: 2, gpu: A100-80GB}}\n", 4, "'services' belongs to scheduling and services workloads"),
        ("workload: {kind: services, hours: 1}\n", 4, "a services workload needs 'services'"),
        ("workload: {kind: services, hours: 1, services: {rps: 2, gpu: A100-80GB, migration: [none, teleport]}}\n", 4, "unknown migration policy 'teleport'"),
        ("workload: {kind: services, hours: 1, services: {rps: 2, gpu: A100-80GB, migration: [llumnix, llumnix]}}\n", 4, "'llumnix' is listed twice"),
        ("workload: {kind: services, hours: 1, services: {rps: 2, gpu: A100-80GB, method: teleport}}\n", 4, "method 'teleport' must be live, blocking or recompute"),
        ("workload: {kind: services, hours: 1, services: {rps: 2, gpu: A100-80GB, priority_share: 1.5}}\n", 4, "priority_share 1.5 must be within 0 … 1"),
        ("workload: {kind: services, hours: 1, services: {rps: 2, gpu: A100-80GB, kv_bytes_scale: 2}}\n", 4, "kv_bytes_scale 2.0 must be within 0 … 1"),
        ("workload: {kind: services, hours: 1, services: {rps: 2, gpu: A100-80GB, kv_link: 10mbps}}\n", 4, "kv_link: bandwidth '10mbps' is ambiguous"),
        ("workload: {kind: services, hours: 1, services: {rps: 2, gpu: A100-80GB, trace: chat}}\n", 4, "trace 'chat' must be code, conversation or both"),
        ("workload: {kind: services, jobs_per_hour: 3, services: {rps: 2, gpu: A100-80GB}}\n", 4, "'jobs_per_hour' does not apply to a services workload"),
        ("workload: {kind: services, hours: 1, services: {rps: 2, gpu: A100-80GB}}\nfaults:\n  - {at: 5s, action: drain}\n", 6, "missing 'target'"),
    ])
    func serviceSpecs(_ body: String, _ line: Int, _ message: String) {
        do {
            _ = try ExperimentSpec.parse("name: t\ntopology: default-topology.yaml\nduration: 60s\n" + body, file: "test.yaml",
                                         baseDirectory: ExperimentSpecTests.repo + "/experiments")
            Issue.record("accepted: \(body)")
        } catch let e as SpecError {
            #expect(e.line == line, "\(e)")
            #expect(e.description.contains(message), "\(e)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("the twin serves requests one by one as the agents do; a crash costs the requests on the dead node's replicas until it is detected, and none is lost")
    func twinPerRequest() throws {
        let svc = ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1,
                              rateCurve: [RatePoint(time: 0, rps: 2)], meanPrefillTokens: 500, meanDecodeTokens: 100, sloSeconds: 20)
        let requests = RequestStream.generate([svc], until: 3600, seed: 1)
        let nodes = [NodeSlot(id: "a", gpuModel: "A100-80GB", gpuCount: 2), NodeSlot(id: "b", gpuModel: "A100-80GB", gpuCount: 2)]
        let workload = Workload(name: "svc", jobs: [], services: [svc])
        var options = TwinOptions()
        options.requests = requests
        let calm = DigitalTwin(nodes: nodes, workload: workload, kb: serviceKB, options: options).run(policy: Policies.named("hybrid")!)
        let c = try #require(calm.services.first)
        #expect(c.offeredRequests == Double(requests.count) && c.attainment == 1, "\(c)")
        #expect((c.latencyP50 ?? 0) > 0 && (c.latencyP99 ?? 100) < 20)
        // Node a (which holds the first replica) crashes at 1000 s; the detector notices 120 s later.
        options.failures = [NodeFailure(node: "a", at: 1000, downFor: 1e9, detectedAfter: 120)]
        let hit = DigitalTwin(nodes: nodes, workload: workload, kb: serviceKB, options: options).run(policy: Policies.named("hybrid")!)
        let h = try #require(hit.services.first)
        #expect(h.offeredRequests == Double(requests.count))
        #expect((h.latencyP99 ?? 0).isFinite, "every request finished: \(h)")
        let lostWindow = Double(requests.filter { $0.arrival >= 1000 && $0.arrival < 1100 }.count) / Double(requests.count)
        #expect(h.attainment < 1 - lostWindow / 2 && h.attainment > 0.8, "\(h.attainment) with \(lostWindow) of the requests in the blind window")
    }

    @Test("a service's replicas spread over nodes: a second replica goes to another node while one has room, also when it must take GPUs back")
    func replicasSpread() throws {
        let svc = ServiceSpec(id: "s", model: "Llama-2-7b", gpuModel: "A100-80GB", gpusPerReplica: 1,
                              rateCurve: [RatePoint(time: 0, rps: 0.1), RatePoint(time: 100, rps: 1000)], meanPrefillTokens: 500, meanDecodeTokens: 100, sloSeconds: 20)
        var s = Scheduler(policy: Policies.named("hybrid")!, kb: serviceKB, services: [svc])
        s.state.addNode(NodeSlot(id: "a", gpuModel: "A100-80GB", gpuCount: 4))
        s.state.addNode(NodeSlot(id: "b", gpuModel: "A100-80GB", gpuCount: 2))
        _ = s.step(now: 0)
        // One replica: the tightest fit, b.
        #expect(s.replicas(of: "s").map(\.placement.nodeID) == ["b"])
        let more = s.step(now: 100)
        let nodes = s.replicas(of: "s").map(\.placement.nodeID)
        // Six wanted, six GPUs: the second goes to a (no replica there yet), then the rest fill up.
        #expect(nodes.count == 6 && Set(nodes) == ["a", "b"], "\(nodes) \(more)")
        #expect(s.replicas(of: "s")[1].placement.nodeID == "a")
        #expect(s.state.invariantViolations().isEmpty)
    }
}
