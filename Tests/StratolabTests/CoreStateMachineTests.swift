import Cluster
import Foundation
import MemoryAgent
import Protocol
import Scheduling
import Testing
import Wire
@testable import Coordinator

// The pure state machines, driven by hand-made timestamps: no sockets, no sleeps.

private func gpuRegistration(_ id: String, instance: String, model: String = "A100-80GB", count: UInt32 = 4) -> Register {
    var r = Register()
    r.nodeID = id
    r.kind = .gpu
    r.instanceID = instance
    r.capabilities.gpu = GPUCatalog.capabilities(for: GPUCatalog.model(named: model)!, count: count)
    return r
}

private func heartbeat(_ id: String, incarnation: UInt64) -> Heartbeat {
    var hb = Heartbeat()
    hb.nodeID = id
    hb.incarnation = incarnation
    return hb
}

@Suite("Failure detector")
struct FailureDetectorSpec {
    @Test("a silent node goes suspect after the suspicion timeout and dead after the dead timeout",
          arguments: [(Int64(999), Liveness.alive), (Int64(1000), .suspect), (Int64(1999), .suspect), (Int64(2000), .dead), (Int64(5000), .dead)])
    func silence(ms: Int64, expected: Liveness) {
        var d = FailureDetector()
        d.track("n", now: 0)
        _ = d.tick(now: .millis(ms))
        #expect(d.liveness(of: "n") == expected)
    }

    @Test("a suspect that is heard again is alive; a dead node is not revived by a heartbeat")
    func revival() {
        var d = FailureDetector()
        d.track("n", now: 0)
        #expect(d.tick(now: .millis(1200)).map(\.to) == [.suspect])
        #expect(d.heard("n", now: .millis(1300))?.to == .alive)
        #expect(d.tick(now: .millis(3300)).map(\.to) == [.dead])
        #expect(d.heard("n", now: .millis(3400)) == nil)
        #expect(d.liveness(of: "n") == .dead)
        d.track("n", now: .millis(3500))
        #expect(d.liveness(of: "n") == .alive)
    }
}

@Suite("Clock offset estimation")
struct ClockOffsetSpec {
    @Test("symmetric delays give the exact offset, and the least-delayed sample wins")
    func estimate() {
        var e = ClockOffsetEstimator(window: 4)
        #expect(e.estimate == nil)
        // Agent clock 5 ms behind the coordinator; 2 ms each way.
        e.add(ClockSample(t1: 0, t2: .millis(7), t3: .millis(7), t4: .millis(4)))
        #expect(e.estimate?.offsetNanos == .millis(5))
        #expect(e.estimate?.errorBoundNanos == .millis(2))
        // A noisier sample (asymmetric, 10 ms out) does not replace the better one.
        e.add(ClockSample(t1: .millis(100), t2: .millis(115), t3: .millis(115), t4: .millis(110)))
        #expect(e.estimate?.offsetNanos == .millis(5))
        // Samples whose agent clock ran backwards are discarded.
        e.add(ClockSample(t1: .millis(10), t2: 0, t3: 0, t4: .millis(5)))
        #expect(e.estimate?.samples == 2)
    }
}

@Suite("Commands")
struct CommandSpec {
    @Test("a re-delivered command is acknowledged again but executed once")
    func idempotent() {
        var ledger = CommandLedger(capacity: 2)
        var runs = 0
        var c = Command(); c.commandID = 7; c.nodeID = "n"; c.ping = Stratolab_V1_Ping()
        let first = ledger.handle(c) { _ in runs += 1; return (true, "done") }
        let again = ledger.handle(c) { _ in runs += 1; return (true, "done") }
        #expect(runs == 1)
        #expect(!first.duplicate && again.duplicate && again.detail == "done")
    }

    @Test("unacknowledged commands are re-sent with backoff, and wait while their node is unreachable")
    func resend() {
        var o = OutstandingCommands(retryNanos: .millis(500), maxRetryNanos: .millis(2000))
        var c = Command(); c.commandID = 1; c.nodeID = "n"
        o.add(c, now: 0)
        #expect(o.due(now: 0) { _ in false }.isEmpty)
        #expect(o.due(now: 0) { _ in true }.map(\.commandID) == [1])
        #expect(o.due(now: .millis(499)) { _ in true }.isEmpty)
        #expect(o.due(now: .millis(500)) { _ in true }.count == 1)
        #expect(o.due(now: .millis(1400)) { _ in true }.isEmpty)   // second retry waits 1 s
        o.expedite(nodeID: "n", now: .millis(1400))
        #expect(o.due(now: .millis(1400)) { _ in true }.count == 1)
        #expect(o.acknowledge(1) != nil && o.count == 0)
    }
}

@Suite("Membership")
struct MembershipSpec {
    @Test("register, heartbeat, die, and rejoin with a higher incarnation")
    func lifecycle() {
        var m = Membership()
        #expect(m.register(gpuRegistration("g", instance: "p1"), instanceID: "p1", now: 0, wallNow: 0)
                == .accepted(incarnation: 1, newLife: true))
        #expect(m.heartbeat(heartbeat("g", incarnation: 1), now: .millis(200), wallNow: 0) == .ok(revived: false))
        #expect(m.tick(now: .millis(2300)).map(\.to) == [.dead])
        if case .mustRegister = m.heartbeat(heartbeat("g", incarnation: 1), now: .millis(2400), wallNow: 0) {} else {
            Issue.record("a dead node's heartbeat must ask it to register")
        }
        #expect(m.register(gpuRegistration("g", instance: "p1"), instanceID: "p1", now: .millis(2500), wallNow: 0)
                == .accepted(incarnation: 2, newLife: true))
        // The same process registering again while alive keeps its incarnation (reconciliation).
        #expect(m.register(gpuRegistration("g", instance: "p1"), instanceID: "p1", now: .millis(2600), wallNow: 0)
                == .accepted(incarnation: 2, newLife: false))
    }

    @Test("a second process cannot claim a live node's id")
    func conflict() {
        var m = Membership()
        _ = m.register(gpuRegistration("g", instance: "p1"), instanceID: "p1", now: 0, wallNow: 0)
        guard case .rejected(let code, let message) = m.register(gpuRegistration("g", instance: "p2"), instanceID: "p2", now: 1, wallNow: 0) else {
            Issue.record("expected a conflict"); return
        }
        #expect(code == .nodeIDConflict)
        #expect(message.contains("'g'"))
    }

    @Test("impossible resources are rejected with the field named",
          arguments: [("count", "gpu.count"), ("model", "gpu.model"), ("empty-id", "node_id")])
    func invalid(change: String, field: String) {
        var r = gpuRegistration("g", instance: "p1")
        switch change {
        case "count": r.capabilities.gpu.count = 0
        case "model": r.capabilities.gpu.model = "Z9000"
        default: r.nodeID = ""
        }
        var m = Membership()
        guard case .rejected(let code, let message) = m.register(r, instanceID: "p1", now: 0, wallNow: 0) else {
            Issue.record("expected a rejection"); return
        }
        #expect(code == .invalidRegistration)
        #expect(message.contains(field))
    }
}

@Suite("Envelope codec")
struct EnvelopeCodecSpec {
    @Test("frames decode back, and bad frames are classified rather than crashing")
    func classify() throws {
        let codec = EnvelopeCodec(maxFrameBytes: 1024)
        let e = Envelope.make(sender: "a", messageID: 9, sentAtNanos: 1, body: .heartbeat(heartbeat("a", incarnation: 1)))
        #expect(try codec.decode(codec.encode(e)) == e)
        #expect(throws: EnvelopeDecodeError.frameTooLarge(size: 2000, limit: 1024)) { try codec.decode([UInt8](repeating: 0, count: 2000)) }
        var v2 = e; v2.protocolVersion = 2
        #expect(throws: EnvelopeDecodeError.unsupportedVersion(2)) { try codec.decode(codec.encode(v2)) }
        var empty = e; empty.body = nil
        #expect(throws: EnvelopeDecodeError.missingBody(messageID: 9)) { try codec.decode(codec.encode(empty)) }
    }

    @Test("10,000 random and mutated frames never crash the decoder")
    func fuzz() {
        let codec = EnvelopeCodec()
        var rng = SplitMix64(seed: 2026)
        var r = gpuRegistration("g", instance: "p")
        r.labels = ["rack": "r1"]
        let seeds = [
            codec.encode(Envelope.make(sender: "g", messageID: 1, sentAtNanos: 2, body: .register(r))),
            codec.encode(Envelope.make(sender: "g", messageID: 3, sentAtNanos: 4, body: .heartbeat(heartbeat("g", incarnation: 1)))),
        ]
        var decoded = 0, rejected = 0
        for i in 0..<10_000 {
            var frame: [UInt8]
            if i % 2 == 0 {
                frame = (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            } else {
                frame = seeds[i % seeds.count]
                switch rng.next() % 4 {
                case 0: frame[Int(rng.next() % UInt64(frame.count))] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
                case 1: frame = Array(frame.prefix(Int(rng.next() % UInt64(frame.count))))
                case 2: frame.insert(UInt8(truncatingIfNeeded: rng.next()), at: Int(rng.next() % UInt64(frame.count)))
                default: frame += [UInt8(truncatingIfNeeded: rng.next()), UInt8(truncatingIfNeeded: rng.next())]
                }
            }
            do { _ = try codec.decode(frame); decoded += 1 } catch is EnvelopeDecodeError { rejected += 1 } catch {
                Issue.record("unexpected error type \(error)")
            }
        }
        #expect(decoded > 0 && rejected > 0)
        #expect(decoded + rejected == 10_000)
    }
}

@Suite("State store")
struct StateStoreSpec {
    @Test("nodes, pending commands, counters and the epoch survive reopening the store")
    func durable() throws {
        let dir = NSTemporaryDirectory() + "strato-store-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var m = Membership()
        _ = m.register(gpuRegistration("g", instance: "p1"), instanceID: "p1", now: 0, wallNow: 42)
        do {
            let store = try StateStore(directory: dir)
            #expect(try store.nextEpoch() == 1)
            try store.save(Array(m.nodes.values))
            var c = Command(); c.commandID = try store.nextCommandID(); c.nodeID = "g"; c.ping = Stratolab_V1_Ping()
            try store.savePending(c, attempts: 2, at: 1)
            try store.saveCounters(["rejected_malformed": 3])
        }
        let reopened = try StateStore(directory: dir)
        #expect(try reopened.nextEpoch() == 2)
        let nodes = try reopened.loadNodes()
        #expect(nodes.map(\.id) == ["g"])
        #expect(nodes[0].status.incarnation == 1 && nodes[0].instanceID == "p1" && nodes[0].lastHeardWall == 42)
        #expect(nodes[0].status.capabilities.gpu.model == "A100-80GB")
        let pending = try reopened.loadPendingCommands()
        #expect(pending.map(\.command.commandID) == [1] && pending[0].attempts == 2)
        #expect(try reopened.nextCommandID() == 2)
        #expect(try reopened.loadCounters()["rejected_malformed"] == 3)
        var ack = CommandAck(); ack.commandID = 1; ack.ok = true
        try reopened.markAcknowledged(ack, at: 5)
        #expect(try reopened.loadPendingCommands().isEmpty)
    }
}

@Suite("Catalogue and sizes")
struct CatalogSpec {
    @Test("GPU models are found by their usual spellings", arguments: [
        ("a100_80gb", "A100-80GB"), ("A100-80G", "A100-80GB"), ("A100", "A100-80GB"), ("h100", "H100"), ("t4", "T4"), ("A100-40GB", "A100-40GB"),
    ])
    func lookup(name: String, expected: String) {
        #expect(GPUCatalog.model(named: name)?.name == expected)
    }

    @Test("sizes parse as people write them")
    func sizes() {
        #expect(ByteSize.parse("4GiB") == 4 << 30)
        #expect(ByteSize.parse("512MiB") == 512 << 20)
        #expect(ByteSize.parse("1.5GB") == 1_500_000_000)
        #expect(ByteSize.parse("123") == 123)
        #expect(ByteSize.parse("four") == nil)
        #expect(throws: MemoryHost.SpecError.self) { try MemoryHost.TierSpec.parse("flash:1GiB") }
    }
}
