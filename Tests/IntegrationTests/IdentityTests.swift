import Cluster
import Foundation
import Protocol
import Testing
import Wire

extension MultiProcess {
/// Identity bound to keys on a real CURVE testbed: each agent process has its own key pinned to its
/// node ids; a second authorised client tries to act as a live node and is refused every time.
@Suite("Identity, roles and the state-directory lock")
struct IdentityTests {
    static let nodes = """
          - {id: gpu-v, kind: gpu, site: cloud, gpu: {model: A10, count: 1}}
          - {id: mem-w, kind: memory, site: cloud, tiers: [dram:64MiB]}
        """

    /// A raw client with a chosen key file, sending hand-made envelopes.
    final class Spoofer {
        let client: OperatorClient
        let codec = EnvelopeCodec()
        var nextID: UInt64 = 1000
        init(_ cluster: TestCluster, keyFile: String) throws {
            client = try OperatorClient(endpoint: cluster.bed.endpoint, keysDirectory: cluster.bed.keysDirectory, keyFile: keyFile)
        }
        /// Sends `body` as `sender`; the reply's error (nil when the reply is not an error, or none came).
        func send(_ body: Envelope.OneOf_Body, as sender: String) throws -> (id: UInt64, reply: Envelope?) {
            nextID += 1
            let e = Envelope.make(sender: sender, messageID: nextID, sentAtNanos: SystemClock.shared.wallNanos(), body: body)
            return (nextID, try client.sendRaw([codec.encode(e)], timeoutMs: 2000))
        }
        /// Expects a refusal with `code` that names the message it answers.
        func expectRefused(_ body: Envelope.OneOf_Body, as sender: String, _ code: ErrorCode, _ what: String,
                           sourceLocation: SourceLocation = #_sourceLocation) throws {
            let (id, reply) = try send(body, as: sender)
            guard case .error(let e)? = reply?.body else {
                Issue.record("\(what): expected \(code), got \(reply.map { $0.bodyName } ?? "no reply")", sourceLocation: sourceLocation)
                return
            }
            #expect(e.code == code, "\(what): \(e.code) \(e.message)", sourceLocation: sourceLocation)
            #expect(e.offendingMessageID == id, "\(what): the error names message \(id)", sourceLocation: sourceLocation)
        }
    }

    static func counters(_ s: StatusReply) -> [String: UInt64] { Dictionary(uniqueKeysWithValues: s.counters.map { ($0.name, $0.value) }) }

    @Test("a second authorised client cannot heartbeat, ack, deregister, register or take commands for a live node")
    func spoofsRefused() throws {
        let cluster = try TestCluster(name: "spoof", nodes: Self.nodes)
        defer { cluster.shutdown() }
        let keys = KeyDirectory(path: cluster.bed.keysDirectory!)
        let live = try #require(try cluster.node("gpu-v"))
        // The strongest impostor: the shared agent key, which may claim any node id.
        let shared = try Spoofer(cluster, keyFile: keys.file("agent.key"))
        let other = try Spoofer(cluster, keyFile: keys.agentKeyFile("mem-w"))     // another agent's own key
        let op = try Spoofer(cluster, keyFile: keys.file("operator.key"))
        defer { shared.client.close(); other.client.close(); op.client.close() }

        var hb = Heartbeat(); hb.nodeID = "gpu-v"; hb.incarnation = live.incarnation; hb.sequence = 1_000_000
        try shared.expectRefused(.heartbeat(hb), as: "gpu-v", .notBound, "heartbeat with the shared agent key")
        try other.expectRefused(.heartbeat(hb), as: "gpu-v", .notAuthorized, "heartbeat with another agent's pinned key")
        try op.expectRefused(.heartbeat(hb), as: "gpu-v", .notAuthorized, "heartbeat with the operator key")
        try shared.expectRefused(.heartbeat(hb), as: "mem-w", .senderMismatch, "heartbeat whose sender is another node")

        var reg = Register(); reg.nodeID = "gpu-v"; reg.kind = .gpu; reg.instanceID = "impostor"; reg.capabilities.gpu = GPUCatalogFixture.a10
        reg.capabilities.gpu.count = 1
        try shared.expectRefused(.register(reg), as: "gpu-v", .nodeIDConflict, "registering a live node's id")
        try other.expectRefused(.register(reg), as: "gpu-v", .notAuthorized, "registering an id another key is pinned to")
        try op.expectRefused(.register(reg), as: "gpu-v", .notAuthorized, "registering with the operator key")

        var dereg = Deregister(); dereg.nodeID = "gpu-v"; dereg.incarnation = live.incarnation; dereg.reason = "spoofed"
        try shared.expectRefused(.deregister(dereg), as: "gpu-v", .notBound, "deregistering another connection's node")

        // A command for the real node while it is paused: forged and blind acks settle nothing,
        // heartbeats from the impostor neither keep it alive nor take its commands.
        cluster.signal("gpu-v", SIGSTOP)
        var resumed = false
        defer { if !resumed { cluster.signal("gpu-v", SIGCONT) } }
        let c = try cluster.client()
        defer { c.close() }
        var ping = Command(); ping.ping = Stratolab_V1_Ping()
        let sent = try c.command(node: "gpu-v", ping)
        var ack = CommandAck(); ack.commandID = sent.commandID; ack.nodeID = "gpu-v"; ack.ok = true
        try shared.expectRefused(.commandAck(ack), as: "gpu-v", .notBound, "a forged ack")
        for id in 1...60 as ClosedRange<UInt64> {
            var blind = CommandAck(); blind.commandID = id; blind.nodeID = "nobody"; blind.ok = true
            let (_, reply) = try shared.send(.commandAck(blind), as: "nobody")
            if case .error(let e)? = reply?.body { #expect(e.code == .notRegistered) } else { Issue.record("blind ack \(id) not refused") }
        }
        #expect(try cluster.status().pendingCommands == 1, "the real node's command is still pending")
        // Keep heartbeating as the node past the failure detector's dead time: it dies all the same,
        // and every reply the impostor gets is a refusal (never the node's command).
        let pausedAt = Date()
        while Date().timeIntervalSince(pausedAt) < 2.6 {
            let (_, reply) = try shared.send(.heartbeat(hb), as: "gpu-v")
            if case .error(let e)? = reply?.body { #expect(e.code == .notBound || e.code == .notRegistered) } else {
                Issue.record("the impostor got '\(reply?.bodyName ?? "nothing")'")
            }
            usleep(200_000)
        }
        #expect(try cluster.node("gpu-v")?.state == .dead, "impostor heartbeats did not keep the paused node alive")
        cluster.signal("gpu-v", SIGCONT); resumed = true
        try cluster.waitFor("the real node back and its command acknowledged", seconds: 15) {
            let s = try cluster.status()
            return s.pendingCommands == 0 && s.nodes.first { $0.nodeID == "gpu-v" }?.state == .alive
        }
        let k = Self.counters(try cluster.status())
        for name in ["refused_not_bound", "refused_role", "refused_node_not_pinned", "refused_sender_mismatch", "refused_not_registered"] {
            #expect((k[name] ?? 0) >= 1, "counter \(name): \(k[name] ?? 0)")
        }
        #expect((k["commands_acknowledged"] ?? 0) >= 1)
    }

    @Test("a key removed from authorized_keys is refused without a restart: its node dies; a key added is admitted")
    func keyRemoved() throws {
        let cluster = try TestCluster(name: "revoke", nodes: Self.nodes)
        defer { cluster.shutdown() }
        let keys = KeyDirectory(path: cluster.bed.keysDirectory!)
        let epoch = try cluster.status().coordinatorEpoch
        let gone = try KeyDirectory.readPair(keys.agentKeyFile("gpu-v")).publicKey
        let fresh = try CurveKeyPair.generate()
        try KeyDirectory.write(fresh, role: "driver", to: keys.file("late-driver.key"))
        let text = try String(contentsOfFile: keys.file("authorized_keys"), encoding: .utf8)
        let edited = text.split(separator: "\n").filter { !$0.hasPrefix(gone) }.joined(separator: "\n") + "\n\(fresh.publicKey) driver\n"
        try edited.write(toFile: keys.file("authorized_keys"), atomically: true, encoding: .utf8)
        try cluster.waitFor("gpu-v dead once its key is gone", seconds: 15) { try cluster.node("gpu-v")?.state == .dead }
        #expect(try cluster.node("mem-w")?.state == .alive)
        // The new key works at once; its role reads but does not command.
        let driver = try OperatorClient(endpoint: cluster.bed.endpoint, keysDirectory: cluster.bed.keysDirectory, keyFile: keys.file("late-driver.key"))
        defer { driver.close() }
        let s = try driver.status()
        #expect(s.coordinatorEpoch == epoch, "no restart")
        var ping = Command(); ping.ping = Stratolab_V1_Ping()
        #expect(throws: OperatorClient.ClientError.self) { _ = try driver.command(node: "mem-w", ping) }
        let k = Self.counters(s)
        #expect((k["refused_key_not_authorized"] ?? 0) >= 1 && (k["authorized_keys_reloaded"] ?? 0) >= 1, "\(k)")
    }

    @Test("a second coordinator on a live state directory refuses to start, names the holder's pid, and changes nothing on disk")
    func stateDirectoryLocked() throws {
        let cluster = try TestCluster(name: "lock", nodes: "  - {id: mem-w, kind: memory, site: cloud, tiers: [dram:64MiB]}")
        defer { cluster.shutdown() }
        let state = cluster.directory + "/run/state"
        // Hold the live coordinator still so its own writes cannot blur the comparison.
        try cluster.freeze("coordinator")
        defer { cluster.signal("coordinator", SIGCONT) }
        func snapshot() throws -> [String: Data] {
            var out: [String: Data] = [:]
            let fm = FileManager.default
            for f in try fm.subpathsOfDirectory(atPath: state) {
                var dir: ObjCBool = false
                if fm.fileExists(atPath: state + "/" + f, isDirectory: &dir), !dir.boolValue { out[f] = try Data(contentsOf: URL(fileURLWithPath: state + "/" + f)) }
            }
            return out
        }
        let before = try snapshot()
        #expect(before["state.db"] != nil)
        let pid = try cluster.spawn("second", ["coordinator", "--endpoint", "ipc://\(cluster.directory)/second.sock", "--state-dir", state])
        var status: Int32 = 0
        let deadline = Date().addingTimeInterval(20)
        while waitpid(pid, &status, WNOHANG) == 0 && Date() < deadline { usleep(50_000) }
        #expect(status != 0, "the second coordinator exited with an error")
        let log = (try? String(contentsOfFile: cluster.directory + "/run/logs/second.log", encoding: .utf8)) ?? ""
        #expect(log.contains("in use by another coordinator (pid \(cluster.pid(of: "coordinator")))"), "\(log)")
        #expect(try snapshot() == before, "every file of the state directory unchanged (epoch and rows included)")
    }
}
}
