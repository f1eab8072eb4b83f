import Cluster
import Coordinator
import Foundation
import Protocol
import Scheduling
import Testing
import Wire

@Suite("Identity, roles and bindings at the coordinator")
struct AccessTests {
    static let agentKey = String(repeating: "a", count: 40)
    static let pinnedKey = String(repeating: "b", count: 40)
    static let operatorKey = String(repeating: "c", count: 40)
    static let driverKey = String(repeating: "d", count: 40)

    static var keysText: String {
        """
        # comment
        \(agentKey) agent
        \(pinnedKey) agent nodes=gpu-a,player-*
        \(operatorKey) operator
        \(driverKey) driver
        """
    }

    @Test("authorized_keys: roles, pinned node ids with prefixes; each bad line named")
    func parse() throws {
        let keys = try KeyDirectory.parseAuthorized(Self.keysText, file: "ak")
        #expect(keys.count == 4)
        #expect(keys[Self.pinnedKey]?.nodes == ["gpu-a", "player-*"])
        #expect(keys[Self.pinnedKey]!.mayClaim("gpu-a") && keys[Self.pinnedKey]!.mayClaim("player-17"))
        #expect(!keys[Self.pinnedKey]!.mayClaim("gpu-b") && !keys[Self.pinnedKey]!.mayClaim("gpu-ab"))
        #expect(keys[Self.agentKey]!.mayClaim("anything"))
        #expect(!keys[Self.operatorKey]!.mayClaim("gpu-a"), "only agent keys claim nodes")
        func problem(_ text: String) -> String {
            do { _ = try KeyDirectory.parseAuthorized(text, file: "ak"); return "" } catch { return "\(error)" }
        }
        #expect(problem("\(Self.agentKey)").contains("ak:1: no role"))
        #expect(problem("#\n\(Self.agentKey) admin").contains("ak:2: unknown role 'admin'"))
        #expect(problem("short agent").contains("not a 40-character Z85 public key"))
        #expect(problem("\(Self.operatorKey) operator nodes=x").contains("only an agent key takes nodes="))
        #expect(problem("\(Self.agentKey) agent nodes=").contains("nodes= needs"))
        #expect(problem("\(Self.agentKey) agent\n\(Self.agentKey) driver").contains("ak:2: key listed twice"))
    }

    @Test("roles: agents register, operators change state, drivers submit, every key reads; an unknown key nothing")
    func roles() throws {
        let access = ControlAccess(keys: try KeyDirectory.parseAuthorized(Self.keysText, file: "ak"))
        func peer(_ key: String?) -> Peer { Peer(connection: [1], key: key) }
        #expect(access.admit(peer(Self.agentKey), need: .agent) == nil)
        #expect(access.admit(peer(Self.operatorKey), need: .agent) == .role(need: .agent, have: .operator))
        #expect(access.admit(peer(Self.agentKey), need: .operator) == .role(need: .operator, have: .agent))
        #expect(access.admit(peer(Self.driverKey), need: .submit) == nil)
        #expect(access.admit(peer(Self.operatorKey), need: .submit) == nil)
        #expect(access.admit(peer(Self.driverKey), need: .operator) != nil)
        for k in [Self.agentKey, Self.operatorKey, Self.driverKey] { #expect(access.admit(peer(k), need: .anyRole) == nil) }
        #expect(access.admit(peer(String(repeating: "z", count: 40)), need: .anyRole) == .keyNotAuthorized)
        #expect(access.admit(peer(nil), need: .anyRole) == .keyNotAuthorized)
        #expect(ControlAccess.Refusal.role(need: .agent, have: .operator).code == .notAuthorized)
        // Open: no keys, no roles.
        #expect(ControlAccess(keys: nil).admit(peer(nil), need: .operator) == nil)
    }

    @Test("a node speaks only from the connection and key that registered it; pinned keys claim only their ids; a removed key is refused")
    func bindings() throws {
        var access = ControlAccess(keys: try KeyDirectory.parseAuthorized(Self.keysText, file: "ak"))
        let real = Peer(connection: [1], key: Self.pinnedKey)
        let impostorSameKey = Peer(connection: [2], key: Self.pinnedKey)
        let impostorShared = Peer(connection: [3], key: Self.agentKey)
        #expect(access.mayRegister("gpu-a", from: real) == nil)
        #expect(access.mayRegister("gpu-b", from: real) == .mayNotClaim(node: "gpu-b"))
        #expect(access.mayRegister("gpu-a", from: Peer(connection: [4], key: Self.operatorKey)) == .role(need: .agent, have: .operator))
        access.bind("gpu-a", to: real)
        #expect(access.route("gpu-a") == [1])
        #expect(access.speaksFor("gpu-a", real) == nil)
        #expect(access.speaksFor("gpu-a", impostorSameKey) == .notBound(node: "gpu-a"))
        #expect(access.speaksFor("gpu-a", impostorShared) == .notBound(node: "gpu-a"))
        #expect(access.route("gpu-a") == [1], "refusals never move the route")
        // After a coordinator restart (nothing bound): the first heartbeat from a key that may claim the id binds it.
        var restarted = ControlAccess(keys: access.keys!)
        #expect(restarted.speaksFor("gpu-a", Peer(connection: [9], key: Self.driverKey)) == .role(need: .agent, have: .driver))
        #expect(restarted.route("gpu-a") == nil)
        #expect(restarted.speaksFor("gpu-a", Peer(connection: [9], key: Self.pinnedKey)) == nil)
        #expect(restarted.route("gpu-a") == [9])
        // A key removed from authorized_keys: every message refused, so the node falls silent.
        var keys = access.keys!
        keys[Self.pinnedKey] = nil
        access.reload(keys)
        #expect(access.speaksFor("gpu-a", real) == .keyNotAuthorized)
        access.unbind("gpu-a")
        #expect(access.route("gpu-a") == nil)
    }

    @Test("fuzz: 20,000 random registrations, node messages, departures and key reloads from five keys on many connections; no refusal moves a route, no key speaks for a node it may not claim")
    func bindingFuzz() throws {
        var rng = SplitMix64(seed: 0xB17D)
        let all = try KeyDirectory.parseAuthorized(Self.keysText, file: "ak")
        var access = ControlAccess(keys: all)
        let unknownKey = String(repeating: "e", count: 40)
        let keyChoices = [Self.agentKey, Self.pinnedKey, Self.operatorKey, Self.driverKey, unknownKey]
        let ids = ["gpu-a", "gpu-b", "player-1", "player-2", "mem-0"]
        var pinnedRemoved = false
        var model: [String: Peer] = [:]          // who each node is bound to, kept independently
        // Independent statement of the rules: which keys may speak for which ids.
        func mayClaim(_ key: String?, _ id: String) -> Bool {
            switch key {
            case Self.agentKey?: return true
            case Self.pinnedKey?: return !pinnedRemoved && (id == "gpu-a" || id.hasPrefix("player-"))
            default: return false
            }
        }
        var refusals = 0, accepted = 0
        for step in 0..<20_000 {
            let peer = Peer(connection: [UInt8(rng.next() % 6)], key: keyChoices[Int(rng.next() % UInt64(keyChoices.count))])
            let id = ids[Int(rng.next() % UInt64(ids.count))]
            let before = access.route(id)
            switch rng.next() % 10 {
            case 0...2:   // Register: the server binds only when the key may claim the id (and membership accepts)
                let r = access.mayRegister(id, from: peer)
                #expect((r == nil) == mayClaim(peer.key, id), "step \(step): register \(id) from \(peer)")
                if r == nil { access.bind(id, to: peer); model[id] = peer; accepted += 1 } else { refusals += 1 }
            case 3...7:   // heartbeat, ack, deregister
                let r = access.speaksFor(id, peer)
                let expected: Bool
                if !mayClaim(peer.key, id) { expected = false }
                else if let owner = model[id] { expected = owner == peer }
                else { expected = true; model[id] = peer }   // an unbound (restored) node binds to the first that may claim it
                #expect((r == nil) == expected, "step \(step): \(id) from \(peer), bound to \(String(describing: model[id])), refusal \(String(describing: r))")
                if r != nil {
                    refusals += 1
                    #expect(access.route(id) == before, "step \(step): a refusal moved \(id)'s route")
                }
            case 8:       // the node left or died
                access.unbind(id); model[id] = nil
            default:      // authorized_keys edited: the pinned key removed or put back
                pinnedRemoved.toggle()
                var k = all
                if pinnedRemoved { k[Self.pinnedKey] = nil }
                access.reload(k)
            }
            #expect(access.route(id) == model[id]?.connection, "step \(step): route of \(id)")
        }
        #expect(refusals > 1000 && accepted > 1000, "the fuzz reached both outcomes: \(refusals) refused, \(accepted) accepted")
    }

    @Test("sender must be the node the message speaks for; recipient the coordinator or empty")
    func sender() {
        var e = Envelope.make(sender: "gpu-a", messageID: 1, sentAtNanos: 1, body: .heartbeat(Heartbeat()))
        #expect(ControlAccess.checkSender(e, node: "gpu-a") == nil)
        #expect(ControlAccess.checkSender(e, node: "gpu-b") == .senderMismatch(sender: "gpu-a", node: "gpu-b"))
        e.recipient = "coordinator"
        #expect(ControlAccess.checkSender(e, node: "gpu-a") == nil)
        e.recipient = "gpu-b"
        #expect(ControlAccess.checkSender(e, node: "gpu-a") == .wrongRecipient("gpu-b"))
    }

    @Test("keys generate writes one pinned key per agent; addAgents appends the missing ones and re-pins changed ones")
    func generate() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("keys-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let kd = try KeyDirectory.generate(at: dir, agents: [("gpu-a", ["gpu-a"]), ("players", ["players-0", "players-1"])])
        let entries = try kd.authorizedEntries()
        #expect(Dictionary(grouping: entries.values, by: \.role).mapValues(\.count) == [.agent: 3, .operator: 1, .driver: 1])
        let a = try KeyDirectory.readPair(kd.agentKeyFile("gpu-a"))
        #expect(entries[a.publicKey]?.nodes == ["gpu-a"])
        #expect(try kd.authorizedKeys(role: .agent).contains(a.publicKey))
        #expect(try kd.addAgents([("gpu-a", ["gpu-a"]), ("mem", ["mem"])]) == ["mem"])
        let m = try KeyDirectory.readPair(kd.agentKeyFile("mem"))
        #expect(try kd.authorizedEntries()[m.publicKey]?.nodes == ["mem"])
        #expect(try kd.authorizedEntries()[a.publicKey]?.nodes == ["gpu-a"], "existing lines kept")
        // A topology whose process now hosts other ids (3 players where it had 2): same key, new pin.
        let p = try KeyDirectory.readPair(kd.agentKeyFile("players"))
        #expect(try kd.addAgents([("gpu-a", ["gpu-a"]), ("players", ["players-0", "players-1", "players-2"])]) == ["players"])
        #expect(try KeyDirectory.readPair(kd.agentKeyFile("players")) == p, "the key itself is kept")
        #expect(try kd.authorizedEntries()[p.publicKey]?.nodes == ["players-0", "players-1", "players-2"])
        #expect(try kd.authorizedEntries().count == 6, "re-pinned in place, not listed twice")
        #expect(try kd.addAgents([("players", ["players-0", "players-1", "players-2"])]).isEmpty)
        #expect(throws: (any Error).self) { try KeyDirectory.generate(at: dir) }
    }

    @Test("one coordinator per state directory: a second lock names the holder's pid and writes nothing")
    func stateLock() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lock-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try StateDirectoryLock(directory: dir)
        let before = try FileManager.default.contentsOfDirectory(atPath: dir)
        do {
            _ = try StateDirectoryLock(directory: dir)
            Issue.record("a second lock was granted")
        } catch let held as StateDirectoryLock.Held {
            #expect(held.holderPid == getpid())
            #expect(held.description.contains("in use by another coordinator (pid \(getpid()))"))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == before)
        first.release()
        _ = try StateDirectoryLock(directory: dir)   // free again once released
    }

    @Test("registrations must be plausible against the catalogue: 1 byte per H100 or 0 TFLOPS is refused")
    func plausibleRegistration() {
        var r = Register()
        r.nodeID = "g"; r.instanceID = "i"; r.kind = .gpu
        var g = GpuCapabilities(); g.model = "H100"; g.count = 8
        g.memoryBytesPerGpu = 80 << 30; g.memoryBandwidthGbps = 3350; g.fp16Tflops = 989
        r.capabilities.gpu = g
        #expect(RegistrationValidator.problems(in: r) == [])
        r.capabilities.gpu.memoryBytesPerGpu = 1
        r.capabilities.gpu.fp16Tflops = 0
        let p = RegistrationValidator.problems(in: r)
        #expect(p.count == 2 && p[0].contains("memory_bytes_per_gpu 1 is implausible") && p[1].contains("fp16_tflops 0.0 is implausible"), "\(p)")
    }
}
