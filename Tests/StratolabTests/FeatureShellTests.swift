import Cluster
import Coordinator
import Foundation
import Logging
import Protocol
import Testing
import Wire
import DataPlane
import Features
import GPUAgent
import Scheduling

/// A feature the shells have never heard of: its controller asks each node that registers to
/// "echo" a word; the node's handler answers with a typed result and reports a fact that it
/// repeats until the coordinator settles it; its operator API answers a feature request.
/// Wire messages are plain bytes here (a real feature has its own proto file).
private let stubFeature = "stub-echo"

private final class StubController: CoordinatorFeature, @unchecked Sendable {
    let lock = NSLock()
    var features: [String] { [stubFeature] }
    var asked = Set<String>()
    var registered: [String] = []
    var results: [String] = []
    var reports: [String] = []
    var requests = 0
    var tableAtStart = false
    let storeSchema = ["CREATE TABLE IF NOT EXISTS stub_echo (node TEXT PRIMARY KEY, said TEXT NOT NULL)"]

    func start(_ s: CoordinatorServices, restoredNodes: [NodeRecord]) throws {
        // The shell created the feature's table when it opened the store, before starting it.
        tableAtStart = (try? s.store.database.run("SELECT count(*) FROM stub_echo")) != nil
    }

    func nodeRegistered(_ r: Register, newLife: Bool, _ s: CoordinatorServices) {
        lock.lock(); registered.append(r.nodeID); lock.unlock()
    }

    func turn(_ s: CoordinatorServices) -> Bool {
        var sent = false
        for (id, record) in s.membership.nodes where record.status.state == .alive && !asked.contains(id) {
            var f = FeatureCommand(); f.feature = stubFeature; f.body = Data("hello \(id)".utf8)
            var c = Command(); c.nodeID = id; c.feature = f
            if (try? s.enqueue(c)) != nil { asked.insert(id); sent = true }
        }
        return sent
    }

    func acknowledged(_ command: Command, _ feature: FeatureCommand, ack: CommandAck, _ s: CoordinatorServices) {
        lock.lock(); results.append(String(decoding: ack.result.body, as: UTF8.self)); lock.unlock()
    }

    func reports(_ reports: [FeatureReport], feature: String, from nodeID: String, clockOffsetNanos: Int64, _ s: CoordinatorServices) -> [String] {
        lock.lock(); self.reports += reports.map { "\(nodeID):\($0.key)=\(String(decoding: $0.body, as: UTF8.self))" }; lock.unlock()
        return reports.map(\.key)
    }

    func handleRequest(_ envelope: Envelope, _ s: CoordinatorServices) -> Envelope.OneOf_Body? {
        guard case .featureRequest(let m)? = envelope.body else { return nil }
        lock.lock(); requests += 1; lock.unlock()
        var reply = FeatureMessage(); reply.feature = stubFeature; reply.body = Data(("echo: " + String(decoding: m.body, as: UTF8.self)).utf8)
        return .featureReply(reply)
    }

    func snapshot() -> (registered: [String], results: [String], reports: [String]) {
        lock.lock(); defer { lock.unlock() }; return (registered, results, reports)
    }
}

private final class StubHandler: FeatureHandler, @unchecked Sendable {
    let lock = NSLock()
    var feature: String { stubFeature }
    var executed: [String] = []
    var unsettled: [String: String] = [:]
    var settledKeys: [String] = []
    var reportsSent = 0

    func execute(_ body: [UInt8], commandID: UInt64, wallNanos: Int64) -> FeatureOutcome {
        let word = String(decoding: body, as: UTF8.self)
        lock.lock(); executed.append(word); unsettled["fact-\(commandID)"] = word.uppercased(); lock.unlock()
        return FeatureOutcome(ok: true, detail: "echoed", result: Array("echo \(word)".utf8))
    }

    func reports(wallNanos: Int64) -> [FeatureReport] {
        lock.lock(); defer { lock.unlock() }
        reportsSent += unsettled.count
        return unsettled.sorted { $0.key < $1.key }.map { var r = FeatureReport(); r.feature = feature; r.key = $0.key; r.body = Data($0.value.utf8); return r }
    }

    func settle(_ keys: [String]) {
        lock.lock(); for k in keys { unsettled[k] = nil }; settledKeys += keys; lock.unlock()
    }

    func snapshot() -> (executed: [String], settled: [String], unsettled: Int) {
        lock.lock(); defer { lock.unlock() }; return (executed, settledKeys, unsettled.count)
    }
}

/// A small render node: the kind does not matter to the features under test.
private func smallRenderSite() -> Capabilities {
    var c = Capabilities(); var r = RenderCapabilities(); r.siteKind = .edge; r.renderSlots = 2; r.gpuModel = "L4"; r.maxFps = 60; c.render = r; return c
}

/// A coordinator on a free port with a fresh state directory, heartbeats every 50 ms, running on
/// its own thread; `stop` stops it and removes the directory.
private final class RunningCoordinator {
    let server: CoordinatorServer
    let directory: String
    init(_ name: String, features: [CoordinatorFeature], endpoint: String = "tcp://127.0.0.1:0") {
        directory = NSTemporaryDirectory() + "strato-\(name)-\(UUID().uuidString)"
        var config = CoordinatorConfig(stateDirectory: directory)
        config.endpoint = endpoint
        config.heartbeatIntervalMs = 50
        let server = CoordinatorServer(config: config, features: features)
        self.server = server
        Thread { try? server.run() }.start()
        server.waitUntilReady()
    }
    var boundEndpoint: String { server.boundEndpoint }
    func stop() {
        server.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

private final class StubNode: AgentBehavior {
    let handler = StubHandler()
    var kind: NodeKind { .render }
    func capabilities() -> Capabilities { smallRenderSite() }
    func fillTelemetry(_ telemetry: inout Telemetry) {}
    var handlers: [FeatureHandler] { [handler] }
}

@Suite("Feature shells")
struct FeatureShellTests {
    @Test("a feature neither shell knows works end to end once registered: command with typed result, reports settled, operator request")
    func stubFeatureThroughBothShells() throws {
        let controller = StubController()
        let coordinator = RunningCoordinator("stub", features: [controller])
        defer { coordinator.stop() }

        var sc = AgentSessionConfig()
        sc.endpoint = coordinator.boundEndpoint
        sc.heartbeatIntervalMs = 50
        let node = StubNode()
        let session = AgentSession(config: sc, nodes: [(AgentIdentity(nodeID: "stub-0", siteName: "edge-1", siteKind: .edge), node)])
        let agentThread = Thread { try? session.run() }
        agentThread.start()
        defer { session.stop() }

        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if controller.snapshot().results.count == 1 && node.handler.snapshot().settled.count == 1 { break }
            usleep(20_000)
        }
        let c = controller.snapshot(), h = node.handler.snapshot()
        #expect(controller.tableAtStart, "the feature's store schema exists when it starts")
        #expect(c.registered == ["stub-0"])
        #expect(h.executed == ["hello stub-0"], "the agent shell routed the feature's command to its handler, once")
        #expect(c.results == ["echo hello stub-0"], "the typed result came back in the acknowledgement")
        #expect(c.reports.first?.hasPrefix("stub-0:fact-") == true && c.reports.first?.hasSuffix("=HELLO STUB-0") == true)
        #expect(h.settled.count == 1 && h.unsettled == 0, "the coordinator's ack settled the report key")

        let client = try OperatorClient(endpoint: coordinator.boundEndpoint)
        defer { client.close() }
        var m = FeatureMessage(); m.feature = stubFeature; m.body = Data("ping".utf8)
        guard case .featureReply(let reply) = try client.request(.featureRequest(m)) else { Issue.record("expected a feature reply"); return }
        #expect(String(decoding: reply.body, as: UTF8.self) == "echo: ping")
        var unknown = FeatureMessage(); unknown.feature = "no-such-feature"
        do {
            _ = try client.request(.featureRequest(unknown))
            Issue.record("a request for a feature nobody registered should be refused")
        } catch {
            #expect("\(error)".contains("does not accept 'feature_request/no-such-feature'"))
        }
    }
}

/// A node whose only feature is the data plane (as every single-node agent has).
private final class PlainNode: AgentBehavior {
    var kind: NodeKind { .render }
    func capabilities() -> Capabilities { smallRenderSite() }
    func fillTelemetry(_ telemetry: inout Telemetry) {}
}

@Suite("Agent session")
struct AgentRegistrationTests {
    @Test("a register the socket refused (no connection to the coordinator yet) goes again within milliseconds, uncounted, not after the retry interval")
    func registersOnceConnected() throws {
        // A free port, for a coordinator that starts only after the agent: the agent's first
        // registers are then refused by its socket (ZMQ_IMMEDIATE) whatever this box's speed.
        let context = ZMQContext()
        let probe = try ZMQSocket(context, .router)
        try probe.bind("tcp://127.0.0.1:0")
        let endpoint = try probe.lastEndpoint()
        probe.close()
        context.terminate()

        var sc = AgentSessionConfig()
        sc.endpoint = endpoint
        sc.heartbeatIntervalMs = 50
        // Had a refused register counted as sent, the next would wait two minutes.
        sc.registerRetryMs = 120_000
        let session = AgentSession(config: sc, nodes: [(AgentIdentity(nodeID: "quick-0", siteName: "edge-1", siteKind: .edge), PlainNode())])
        Thread { try? session.run() }.start()
        defer { session.stop() }
        usleep(50_000)
        let coordinator = RunningCoordinator("register", features: [], endpoint: endpoint)
        defer { coordinator.stop() }
        let deadline = Date().addingTimeInterval(30)
        while session.registeredNodes < 1 && Date() < deadline { usleep(20_000) }
        #expect(session.registeredNodes == 1, "registered within 30 s, with the retry interval at 120 s")
    }
}

@Suite("Feature: dataplane")
struct DataPlaneFeatureTests {
    @Test("two agents advertise their data planes at registration; a probe moves verified bytes agent to agent; bad probes are refused by name")
    func probeBetweenAgents() throws {
        let coordinator = RunningCoordinator("probe", features: [DataPlaneController()])
        defer { coordinator.stop() }

        var handlers: [DataPlaneHandler] = []
        var sessions: [AgentSession] = []
        for (i, network) in [NetworkConditions.none, NetworkConditions(delayMs: 2, bandwidthBytesPerSecond: 20_000_000)].enumerated() {
            var sc = AgentSessionConfig()
            sc.endpoint = coordinator.boundEndpoint
            sc.heartbeatIntervalMs = 50
            var dc = DataPlaneConfig(nodeID: "node-\(i)"); dc.network = network; dc.chunkBytes = 256 << 10
            let h = DataPlaneHandler(plane: try DataPlane(config: dc))
            handlers.append(h)
            let session = AgentSession(config: sc, nodes: [(AgentIdentity(nodeID: "node-\(i)", siteName: "edge-1", siteKind: .edge), PlainNode())],
                                       extraHandlers: [h])
            sessions.append(session)
            Thread { try? session.run() }.start()
        }
        defer { for s in sessions { s.stop() } }
        let client = try OperatorClient(endpoint: coordinator.boundEndpoint)
        defer { client.close() }
        var status = try client.status()
        let deadline = Date().addingTimeInterval(20)
        while status.nodes.filter({ $0.state == .alive }).count < 2 && Date() < deadline { usleep(50_000); status = try client.status() }
        for (i, n) in status.nodes.sorted(by: { $0.nodeID < $1.nodeID }).enumerated() {
            #expect(n.dataEndpoint == handlers[i].dataEndpoint, "registration carries the data-plane endpoint")
        }

        let fast = try client.runProbe(from: "node-0", to: "node-1", bytes: 3 << 20, timeoutSeconds: 30)
        #expect(fast.ok, "\(fast.error)")
        #expect(fast.bytes == 3 << 20 && fast.fromNode == "node-0" && fast.toNode == "node-1")
        // node-1's uplink is 20 MB/s: the second probe's bytes leave through it.
        let slow = try client.runProbe(from: "node-1", to: "node-0", bytes: 4 << 20, timeoutSeconds: 30)
        #expect(slow.ok, "\(slow.error)")
        #expect(slow.seconds >= Double(4 << 20) / 20_000_000, "the emulated 20 MB/s bounds the transfer (took \(slow.seconds) s)")
        #expect(handlers[1].probesVerified == 1 && handlers[0].probesVerified == 1 && handlers[0].probeMismatches == 0)

        var bad = StartProbe(); bad.fromNode = "node-0"; bad.toNode = "nobody"; bad.bytes = 10
        var req = ProbeRequest(); req.start = bad
        do { _ = try client.probe(req); Issue.record("a probe to an unknown node should be refused") } catch {
            #expect("\(error)".contains("no node 'nobody'"))
        }
        bad.toNode = "node-0"
        req.start = bad
        do { _ = try client.probe(req); Issue.record("a probe from a node to itself should be refused") } catch {
            #expect("\(error)".contains("two different nodes"))
        }
    }
}

@Suite("Node context")
struct NodeContextTests {
    @Test("two coordinators in one process each trace into their own recorder and state directory; the process-wide one stays off")
    func twoCoordinatorsTwoTracers() throws {
        var servers: [CoordinatorServer] = []
        var dirs: [String] = []
        for i in 0..<2 {
            let dir = NSTemporaryDirectory() + "strato-ctx-\(i)-\(UUID().uuidString)"
            dirs.append(dir)
            var config = CoordinatorConfig(stateDirectory: dir)
            config.endpoint = "tcp://127.0.0.1:0"
            config.trace = true
            let server = CoordinatorServer(config: config, context: NodeContext(tracer: Tracer(), logger: Logger(label: "test.coordinator.\(i)")))
            servers.append(server)
            Thread { try? server.run() }.start()
            server.waitUntilReady()
        }
        defer {
            for s in servers { s.stop() }
            for d in dirs { try? FileManager.default.removeItem(atPath: d) }
        }
        #expect(servers[0].tracer !== servers[1].tracer)
        #expect(servers.allSatisfy { $0.tracer.isEnabled })
        let shared = Tracer.shared.spoolPath ?? ""
        #expect(!dirs.contains { shared.hasPrefix($0) }, "neither coordinator spools into the process-wide tracer")
        let spools = servers.compactMap { $0.tracer.spoolPath }
        #expect(spools.count == 2 && spools[0] != spools[1])
        for (spool, dir) in zip(spools, dirs) { #expect(spool.hasPrefix(dir), "\(spool) lies under its own state directory") }
    }

    @Test("the agent shell hands each handler its node's context: job runners and replicas trace into the session's tracer")
    func handlersGetTheSessionsTracer() throws {
        let kb = KnowledgeBase(rows: [])
        let node = try EmulatedGPUNode(modelName: "A100-80GB", count: 2)
        let runner = EmulatedJobRunner(execution: ExecutionModel(kb: kb), seed: 1)
        let replicas = EmulatedReplicas(kb: kb)
        let jobs = JobsHandler(runner: runner, gpuModel: node.model.name, gpuCount: node.count)
        let inference = InferenceHandler(replicas: replicas, gpuModel: node.model.name, gpuCount: node.count, busyElsewhere: { [] })
        node.handlers = [jobs, inference]
        let mine = Tracer()
        #expect(runner.tracer !== mine && runner.tracer !== Tracer.shared)
        _ = AgentSession(config: AgentSessionConfig(), nodes: [(AgentIdentity(nodeID: "g-0", siteName: "cloud", siteKind: .cloud), node)],
                         context: NodeContext(tracer: mine, logger: Logger(label: "test")))
        #expect(runner.tracer === mine && replicas.tracer === mine)
    }
}
