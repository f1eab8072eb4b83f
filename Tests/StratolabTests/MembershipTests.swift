import Cluster
import Protocol
import Scheduling
import SwiftProtobuf
import Testing
@testable import Wire

// Membership as a pure state machine: registrations, heartbeats and silence, in plain nanoseconds.

private func gpuRegister(_ id: String = "gpu-1", instance: String = "i1", model: String = "A100-80GB", count: UInt32 = 4) -> Register {
    var r = Register()
    r.nodeID = id
    r.kind = .gpu
    r.instanceID = instance
    r.host = "host-a"
    r.pid = 4242
    r.capabilities.gpu = GPUCatalog.capabilities(for: GPUCatalog.model(named: model)!, count: count)
    return r
}

private func memoryRegister(_ id: String = "mem-1", tiers: [(MemoryTierKind, UInt64)]) -> Register {
    var r = Register()
    r.nodeID = id
    r.kind = .memory
    r.instanceID = "i1"
    r.capabilities.memory.tiers = tiers.map { kind, capacity in
        var t = MemoryTier()
        t.kind = kind
        t.capacityBytes = capacity
        t.bandwidthGbps = 20
        t.latencyNs = 100
        return t
    }
    return r
}

private func renderRegister(_ id: String = "render-1", slots: UInt32) -> Register {
    var r = Register()
    r.nodeID = id
    r.kind = .render
    r.instanceID = "i1"
    r.capabilities.render.siteKind = .edge
    r.capabilities.render.renderSlots = slots
    r.capabilities.render.gpuModel = "L4"
    return r
}

private func heartbeat(_ id: String = "gpu-1", incarnation: UInt64) -> Heartbeat {
    var hb = Heartbeat()
    hb.nodeID = id
    hb.incarnation = incarnation
    return hb
}

private func rejection(_ outcome: Membership.RegisterOutcome) -> (ErrorCode, String)? {
    if case let .rejected(code, message) = outcome { return (code, message) }
    return nil
}

@Suite("Membership")
struct MembershipTests {
    @Test("a valid GPU node is accepted at incarnation 1 and recorded alive with its capabilities")
    func registerValid() {
        var m = Membership()
        let reg = gpuRegister()
        #expect(RegistrationValidator.problems(in: reg).isEmpty)
        #expect(m.register(reg, instanceID: "i1", now: 0, wallNow: 1_000) == .accepted(incarnation: 1, newLife: true))
        let record = m.nodes["gpu-1"]
        #expect(record?.status.state == .alive)
        #expect(record?.status.incarnation == 1)
        #expect(record?.status.capabilities.gpu.count == 4)
        #expect(record?.status.capabilities.gpu.model == "A100-80GB")
        #expect(record?.status.registeredAtUnixNanos == 1_000)
        #expect(record?.confirmed == true)
        #expect(m.isReachable("gpu-1"))
        #expect(m.count(in: .alive) == 1)
        #expect(m.detector.liveness(of: "gpu-1") == .alive)
    }

    @Test("a heartbeat of the current incarnation is accepted and keeps the node alive")
    func heartbeatOK() {
        var m = Membership()
        _ = m.register(gpuRegister(), instanceID: "i1", now: 0, wallNow: 0)
        var hb = heartbeat(incarnation: 1)
        hb.running = ["llama"]
        hb.clock.offsetNanos = 77
        #expect(m.heartbeat(hb, now: .millis(900), wallNow: 5) == .ok(revived: false))
        #expect(m.tick(now: .millis(1800)).isEmpty)
        #expect(m.nodes["gpu-1"]?.status.running == ["llama"])
        #expect(m.nodes["gpu-1"]?.status.clock.offsetNanos == 77)
        #expect(m.nodes["gpu-1"]?.lastHeardWall == 5)
    }

    @Test("telemetry received as bytes is decoded when the status is read, and survives other updates")
    func telemetryKeptAsBytes() throws {
        var m = Membership()
        _ = m.register(gpuRegister(), instanceID: "i1", now: 0, wallNow: 0)
        var t = Telemetry(); t.processRssBytes = 4096
        t.gpus = [GpuTelemetry.with { $0.index = 1; $0.utilization = 0.75 }]
        let bytes: [UInt8] = try t.serializedBytes()
        let kept = bytes.withUnsafeBytes { TelemetryBytes(checked: $0) }
        #expect(m.heartbeat(heartbeat(incarnation: 1), telemetry: kept, now: .millis(100), wallNow: 1) == .ok(revived: false))
        #expect(m.nodes["gpu-1"]?.status.telemetry == t)
        #expect(m.nodes["gpu-1"]?.info.hasTelemetry == false, "info carries no telemetry")
        // A change through `status` keeps the telemetry; a plain heartbeat's own telemetry replaces it.
        m.setLabels(["zone": "b"], on: "gpu-1")
        #expect(m.nodes["gpu-1"]?.status.telemetry == t && m.nodes["gpu-1"]?.status.labels["zone"] == "b")
        var hb = heartbeat(incarnation: 1); hb.telemetry.processRssBytes = 1
        #expect(m.heartbeat(hb, now: .millis(200), wallNow: 2) == .ok(revived: false))
        #expect(m.nodes["gpu-1"]?.status.telemetry == hb.telemetry)
        // A record built from a status with telemetry (a restart's restore) keeps it.
        let restored = NodeRecord(status: m.nodes["gpu-1"]!.status, instanceID: "i1", lastHeardMono: nil, lastHeardWall: 2, confirmed: false)
        #expect(restored.status == m.nodes["gpu-1"]!.status && !restored.info.hasTelemetry)
    }

    @Test("heartbeats from unknown nodes or a stale incarnation must register")
    func heartbeatMustRegister() {
        var m = Membership()
        guard case .mustRegister = m.heartbeat(heartbeat("nobody", incarnation: 1), now: 0, wallNow: 0) else {
            Issue.record("an unknown node's heartbeat was accepted"); return
        }
        _ = m.register(gpuRegister(), instanceID: "i1", now: 0, wallNow: 0)
        guard case .mustRegister(let why) = m.heartbeat(heartbeat(incarnation: 7), now: 1, wallNow: 0) else {
            Issue.record("a stale incarnation's heartbeat was accepted"); return
        }
        #expect(why.contains("incarnation 7"))
    }

    @Test("silence makes a node suspect, then dead; a suspect's heartbeat revives it")
    func silenceAndRevival() {
        var m = Membership()
        _ = m.register(gpuRegister(), instanceID: "i1", now: 0, wallNow: 0)
        #expect(m.tick(now: .millis(1100)).map(\.to) == [.suspect])
        #expect(m.nodes["gpu-1"]?.status.state == .suspect)
        #expect(m.isReachable("gpu-1"))
        #expect(m.heartbeat(heartbeat(incarnation: 1), now: .millis(1200), wallNow: 0) == .ok(revived: true))
        #expect(m.nodes["gpu-1"]?.status.state == .alive)
        #expect(m.tick(now: .millis(2300)).map(\.to) == [.suspect])
        #expect(m.tick(now: .millis(3200)).map(\.to) == [.dead])
        #expect(m.nodes["gpu-1"]?.status.state == .dead)
        #expect(!m.isReachable("gpu-1"))
        #expect(m.count(in: .dead) == 1)
    }

    @Test("a heartbeat after the node was declared dead is told to register again")
    func heartbeatAfterDead() {
        var m = Membership()
        _ = m.register(gpuRegister(), instanceID: "i1", now: 0, wallNow: 0)
        _ = m.tick(now: .millis(2000))
        guard case .mustRegister(let why) = m.heartbeat(heartbeat(incarnation: 1), now: .millis(2100), wallNow: 0) else {
            Issue.record("a dead node's heartbeat was accepted"); return
        }
        #expect(why.contains("dead"))
        #expect(m.nodes["gpu-1"]?.status.state == .dead)
    }

    @Test("the same instance re-registering after being declared dead starts a new life at incarnation 2")
    func rejoinAfterDead() {
        var m = Membership()
        _ = m.register(gpuRegister(), instanceID: "i1", now: 0, wallNow: 0)
        _ = m.tick(now: .millis(2500))
        #expect(m.register(gpuRegister(), instanceID: "i1", now: .millis(2600), wallNow: 99) == .accepted(incarnation: 2, newLife: true))
        #expect(m.nodes["gpu-1"]?.status.state == .alive)
        #expect(m.nodes["gpu-1"]?.status.registeredAtUnixNanos == 99)
        #expect(m.heartbeat(heartbeat(incarnation: 2), now: .millis(2700), wallNow: 0) == .ok(revived: false))
    }

    @Test("the same instance re-registering while alive keeps its incarnation and is not a new life")
    func reconcileWhileAlive() {
        var m = Membership()
        _ = m.register(gpuRegister(), instanceID: "i1", now: 0, wallNow: 10)
        m.setDrained(true, on: "gpu-1")
        #expect(m.register(gpuRegister(), instanceID: "i1", now: .millis(500), wallNow: 20) == .accepted(incarnation: 1, newLife: false))
        #expect(m.nodes["gpu-1"]?.status.registeredAtUnixNanos == 10)
        #expect(m.nodes["gpu-1"]?.status.drained == true)
    }

    @Test("a new process's registration continues from the incarnation the agent last had")
    func lastIncarnationHonoured() {
        var m = Membership()
        var reg = gpuRegister()
        reg.lastIncarnation = 41
        #expect(m.register(reg, instanceID: "i1", now: 0, wallNow: 0) == .accepted(incarnation: 42, newLife: true))
    }

    @Test("another instance cannot claim the id of a live, confirmed node")
    func nodeIDConflict() {
        var m = Membership()
        _ = m.register(gpuRegister(), instanceID: "i1", now: 0, wallNow: 0)
        let outcome = m.register(gpuRegister(instance: "i2"), instanceID: "i2", now: .millis(100), wallNow: 0)
        let r = rejection(outcome)
        #expect(r?.0 == .nodeIDConflict)
        #expect(r?.1.contains("gpu-1") == true)
        #expect(r?.1.contains("4242") == true)  // names the holder's pid
        #expect(m.nodes["gpu-1"]?.instanceID == "i1")
        // Once the holder is dead, the id is free for the new instance.
        _ = m.tick(now: .millis(2100))
        #expect(m.register(gpuRegister(instance: "i2"), instanceID: "i2", now: .millis(2200), wallNow: 0) == .accepted(incarnation: 2, newLife: true))
    }

    @Test("impossible registrations are rejected as invalid, naming the field", arguments: [
        "gpu.count", "gpu.model", "memory.tiers[0].capacity_bytes", "appears twice", "render.render_slots",
        "needs gpu capabilities", "node_id is empty", "kind is unspecified", "instance_id is empty", "reserved",
    ])
    func invalidRegistration(expectedInMessage: String) {
        let reg: Register
        switch expectedInMessage {
        case "gpu.count": reg = gpuRegister(count: 0)
        case "gpu.model":
            var r = gpuRegister(); r.capabilities.gpu.model = "Z9000"; reg = r
        case "memory.tiers[0].capacity_bytes": reg = memoryRegister(tiers: [(.dram, 0)])
        case "appears twice": reg = memoryRegister(tiers: [(.dram, 1 << 30), (.dram, 2 << 30)])
        case "render.render_slots": reg = renderRegister(slots: 0)
        case "needs gpu capabilities":
            var r = memoryRegister(tiers: [(.dram, 1 << 30)]); r.kind = .gpu; reg = r
        case "node_id is empty": reg = gpuRegister("")
        case "kind is unspecified":
            var r = gpuRegister(); r.kind = .unspecified; reg = r
        case "instance_id is empty":
            var r = gpuRegister(); r.instanceID = ""; reg = r
        default: reg = gpuRegister("coordinator")
        }
        var m = Membership()
        let r = rejection(m.register(reg, instanceID: "i1", now: 0, wallNow: 0))
        #expect(r?.0 == .invalidRegistration)
        #expect(r?.1.contains(expectedInMessage) == true, "message: \(r?.1 ?? "accepted")")
        #expect(m.nodes.isEmpty)
    }

    @Test("valid memory and render registrations are accepted")
    func otherKindsValid() {
        var m = Membership()
        #expect(m.register(memoryRegister(tiers: [(.dram, 1 << 30), (.nvme, 1 << 34)]), instanceID: "i1", now: 0, wallNow: 0)
                == .accepted(incarnation: 1, newLife: true))
        #expect(m.register(renderRegister(slots: 8), instanceID: "i1", now: 0, wallNow: 0) == .accepted(incarnation: 1, newLife: true))
    }

    @Test("restored records are watched again: silence after a restart takes them to dead")
    func restoreThenSilence() {
        var m = Membership()
        var alive = NodeStatus(); alive.nodeID = "a"; alive.state = .alive; alive.incarnation = 3
        var suspect = NodeStatus(); suspect.nodeID = "s"; suspect.state = .suspect; suspect.incarnation = 1
        var dead = NodeStatus(); dead.nodeID = "d"; dead.state = .dead; dead.incarnation = 2
        m.restore([alive, suspect, dead].map {
            NodeRecord(status: $0, instanceID: "old", lastHeardMono: 123, lastHeardWall: 456, confirmed: true)
        }, now: .millis(10_000))
        #expect(m.nodes["a"]?.confirmed == false && m.nodes["a"]?.lastHeardMono == nil)
        #expect(m.nodes["s"]?.status.state == .alive)
        #expect(m.nodes["d"]?.status.state == .dead)
        #expect(m.tick(now: .millis(11_000)).map(\.nodeID) == ["a", "s"])
        let deaths = m.tick(now: .millis(12_000))
        #expect(deaths.map(\.nodeID) == ["a", "s"] && deaths.allSatisfy { $0.to == .dead })
        #expect(m.count(in: .dead) == 3)
    }

    @Test("a restored node that keeps heartbeating stays alive, and its id may be taken over before it is confirmed")
    func restoreThenHeartbeat() {
        var m = Membership()
        var s = NodeStatus(); s.nodeID = "a"; s.state = .alive; s.incarnation = 3
        m.restore([NodeRecord(status: s, instanceID: "old", lastHeardMono: nil, lastHeardWall: 0, confirmed: true)], now: 0)
        #expect(m.heartbeat(heartbeat("a", incarnation: 3), now: .millis(800), wallNow: 0) == .ok(revived: false))
        #expect(m.tick(now: .millis(1700)).isEmpty)

        var other = Membership()
        other.restore([NodeRecord(status: s, instanceID: "old", lastHeardMono: nil, lastHeardWall: 0, confirmed: true)], now: 0)
        var reg = gpuRegister("a", instance: "new")
        reg.lastIncarnation = 0
        #expect(other.register(reg, instanceID: "new", now: 1, wallNow: 0) == .accepted(incarnation: 4, newLife: true))
    }

    @Test("a clean deregistration marks the node left and stops watching it")
    func deregister() {
        var m = Membership()
        _ = m.register(gpuRegister(), instanceID: "i1", now: 0, wallNow: 0)
        var wrong = Deregister(); wrong.nodeID = "gpu-1"; wrong.incarnation = 9
        let wrongAccepted = m.deregister(wrong)
        #expect(!wrongAccepted)
        var d = Deregister(); d.nodeID = "gpu-1"; d.incarnation = 1
        let accepted = m.deregister(d)
        #expect(accepted)
        #expect(m.nodes["gpu-1"]?.status.state == .left)
        #expect(!m.isReachable("gpu-1"))
        #expect(m.tick(now: .millis(10_000)).isEmpty)
        guard case .mustRegister = m.heartbeat(heartbeat(incarnation: 1), now: .millis(10_001), wallNow: 0) else {
            Issue.record("a departed node's heartbeat was accepted"); return
        }
        #expect(m.register(gpuRegister(), instanceID: "i1", now: .millis(10_002), wallNow: 0) == .accepted(incarnation: 2, newLife: true))
    }

    @Test("labels can be set and removed, and only on known nodes")
    func labels() {
        var m = Membership()
        _ = m.register(gpuRegister(), instanceID: "i1", now: 0, wallNow: 0)
        m.setLabels(["rack": "r1", "zone": "z"], on: "gpu-1")
        m.setLabels(["zone": ""], on: "gpu-1")
        m.setLabels(["rack": "r9"], on: "ghost")
        #expect(m.nodes["gpu-1"]?.status.labels == ["rack": "r1"])
        #expect(m.nodes["ghost"] == nil)
    }
}
