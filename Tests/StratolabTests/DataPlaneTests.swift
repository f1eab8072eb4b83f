import Cluster
import DataPlane
import Foundation
import Protocol
import Testing
import Wire

/// Deterministic bytes of a transfer: what a receiver can check every byte against.
private func pattern(_ offset: Int, _ length: Int, seed: UInt8 = 7) -> [UInt8] {
    (0..<length).map { UInt8(truncatingIfNeeded: (offset + $0) &* 31 &+ Int(seed) &+ (offset + $0) >> 8) }
}

private final class CheckingSink: DataPlaneReceiver {
    var refuse: String?
    var received: [UInt8] = []
    var results: [Result<Int, DataPlaneError>] = []
    /// Simulates a slow consumer: the test pumps this side only every few rounds.
    func shouldAccept(from sender: String, transfer: UInt64, offer: TransferOffer) -> String? { refuse }
    func consume(from sender: String, transfer: UInt64, offset: Int, bytes: UnsafeRawBufferPointer) throws {
        #expect(offset == received.count)
        received += Array(bytes)
    }
    func finished(from sender: String, transfer: UInt64, result: Result<Int, DataPlaneError>) { results.append(result) }
}

private func source(seed: UInt8 = 7) -> TransferSource {
    { offset, length, emit in try pattern(offset, length, seed: seed).withUnsafeBytes { try emit($0) } }
}

/// Pumps both ends on this thread until `done` or the deadline; the receiver only every
/// `receiverEvery` rounds (a slow receiver).
private func drive(_ a: DataPlane, _ b: DataPlane, receiverEvery: Int = 1, seconds: Double = 20, until done: () -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    var round = 0
    while !done() && Date() < deadline {
        round += 1
        _ = try ZMQPoller.readable(a.sockets + b.sockets, timeoutMs: 5)
        try a.pump()
        if round % receiverEvery == 0 { try b.pump() } else { usleep(2_000) }
    }
}

@Suite("Data plane")
struct DataPlaneTests {
    @Test("CRC-32C: the standard check value, and the hardware path agrees with the table on every length")
    func crcKnownAnswers() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.softwareChecksum(Array("123456789".utf8)) == 0xE306_9283)
        for length in [0, 1, 7, 8, 9, 100, 8191, 24_576, 24_577, 100_003, 1 << 20] {
            let bytes = pattern(0, length, seed: UInt8(length & 0xFF))
            #expect(CRC32C.checksum(bytes) == CRC32C.softwareChecksum(bytes), "length \(length)")
        }
    }

    @Test("opening a data plane fixes glibc's malloc thresholds (glibc took both), unless the operator set their own")
    func allocatorTuned() throws {
        let plane = try DataPlane(config: DataPlaneConfig(nodeID: "tuned"))
        defer { plane.close() }
        #if canImport(Glibc)
        let ownTunables = ProcessInfo.processInfo.environment["GLIBC_TUNABLES"]?.contains("glibc.malloc.") ?? false
        #expect(AllocatorTuning.applied == !ownTunables)
        #endif
    }

    @Test("the sender never has more chunks in flight than the receiver granted")
    func senderHonoursCredits() {
        var s = TransferSender(id: 1, totalBytes: 10 * 100, chunkBytes: 100, kind: "t", peerEndpoint: "x", timeoutNanos: 1_000_000_000, now: 0)
        #expect(s.start(now: 0).count == 1)
        var accept = DataFrame(); var a = TransferAccept(); a.credits = 3; accept.body = .accept(a)
        let first = s.received(accept, now: 1)
        #expect(first == [.sendChunk(index: 0, offset: 0, length: 100), .sendChunk(index: 1, offset: 100, length: 100), .sendChunk(index: 2, offset: 200, length: 100)])
        #expect(s.inFlight == 3 && s.credits == 0)
        var credit = DataFrame(); var c = TransferCredit(); c.credits = 2; credit.body = .credit(c)
        #expect(s.received(credit, now: 2).count == 2)
        // More credit back than chunks in flight is a protocol violation, not extra room.
        c.credits = 9; credit.body = .credit(c)
        guard case .failed(.flowControlViolation)? = s.received(credit, now: 3).first else { Issue.record("expected a flow-control violation"); return }
        #expect(s.maxInFlight == 3)
    }

    @Test("the receiver refuses a chunk whose checksum, order or length is wrong, naming it")
    func receiverChecks() {
        var offer = TransferOffer(); offer.totalBytes = 250; offer.chunkBytes = 100
        var r = TransferReceiver(sender: "a", id: 1, offer: offer, window: 4, timeoutNanos: 1_000_000_000, now: 0)
        var h = ChunkHeader(); h.index = 0; h.offset = 0; h.length = 100; h.crc32C = 0xABCD
        #expect(r.chunk(h, payloadLength: 100, payloadCRC: 0xABCD, now: 1).first == .deliver(index: 0, offset: 0))
        h.index = 2; h.offset = 200; h.length = 50
        var bad = r
        guard case .failed(.outOfOrder(let why))? = bad.chunk(h, payloadLength: 50, payloadCRC: 1, now: 2).last else { Issue.record("expected out of order"); return }
        #expect(why.contains("expected chunk 1"))
        h.index = 1; h.offset = 100; h.length = 100; h.crc32C = 0x1111
        let d = r.chunk(h, payloadLength: 100, payloadCRC: 0x2222, now: 3)
        guard case .sendError(let te)? = d.first, case .failed(.checksumMismatch(chunk: 1, _, _))? = d.last else { Issue.record("expected a checksum error, got \(d)"); return }
        #expect(te.code == .checksumMismatch && te.chunkIndex == 1)
    }

    @Test("a transfer arrives whole and verified; a slow receiver keeps both ends within the window")
    func transferWithSlowReceiver() throws {
        var rc = DataPlaneConfig(nodeID: "receiver"); rc.window = 4
        let receiver = try DataPlane(config: rc)
        let sink = CheckingSink()
        receiver.receiver = sink
        var sc = DataPlaneConfig(nodeID: "sender"); sc.window = 4
        let sender = try DataPlane(config: sc)
        var outcome: Result<Int, DataPlaneError>?
        let total = 64 * 4096 + 123
        try sender.send(to: PeerAddress(endpoint: receiver.endpoint), kind: "test", totalBytes: total, chunkBytes: 4096,
                        source: source(), done: { outcome = $0 })
        try drive(sender, receiver, receiverEvery: 5) { outcome != nil && !sink.results.isEmpty }
        #expect(try outcome?.get() == total)
        #expect(try sink.results.first?.get() == total)
        #expect(sink.received == pattern(0, total))
        // The bound: never more than the window sent and not consumed, nor read in one pump.
        #expect(receiver.stats.maxChunksQueued <= 4)
        #expect(receiver.stats.maxChunksQueued >= 2, "the slow receiver should have found chunks waiting")
        #expect(receiver.stats.chunksReceived == 65)
    }

    @Test("a receiver that has no room refuses the offer with its reason")
    func refusedOffer() throws {
        let receiver = try DataPlane(config: DataPlaneConfig(nodeID: "full"))
        let sink = CheckingSink(); sink.refuse = "no free KV blocks"
        receiver.receiver = sink
        let sender = try DataPlane(config: DataPlaneConfig(nodeID: "s"))
        var outcome: Result<Int, DataPlaneError>?
        try sender.send(to: PeerAddress(endpoint: receiver.endpoint), kind: "kv", totalBytes: 10, source: source(), done: { outcome = $0 })
        try drive(sender, receiver) { outcome != nil }
        guard case .failure(.refused(let why))? = outcome else { Issue.record("expected a refusal, got \(String(describing: outcome))"); return }
        #expect(why.contains("no free KV blocks"))
    }

    @Test("a chunk corrupted on the wire is refused by checksum and fails the transfer on both sides")
    func corruptChunkOnTheWire() throws {
        let receiver = try DataPlane(config: DataPlaneConfig(nodeID: "r"))
        let sink = CheckingSink()
        receiver.receiver = sink
        // A hand-made sender: the header's CRC is of the right bytes, the payload has one bit flipped.
        let ctx = ZMQContext()
        defer { ctx.terminate() }
        let dealer = try ZMQSocket(ctx, .dealer)
        defer { dealer.close() }
        try dealer.connect(receiver.endpoint)
        func frame(_ body: DataFrame.OneOf_Body) throws -> [UInt8] {
            var f = DataFrame(); f.protocolVersion = dataPlaneProtocolVersion; f.sender = "forger"; f.transferID = 9; f.body = body
            return try f.serializedBytes()
        }
        var offer = TransferOffer(); offer.totalBytes = 1000; offer.chunkBytes = 1000; offer.kind = "test"
        try dealer.send([try frame(.offer(offer))])
        var replies: [DataFrame] = []
        func collect(_ n: Int) throws {
            let deadline = Date().addingTimeInterval(10)
            while replies.count < n && Date() < deadline {
                _ = try ZMQPoller.readable(receiver.sockets + [dealer], timeoutMs: 5)
                try receiver.pump()
                while let f = try dealer.receive(dontWait: true) { replies.append(try DataFrame(serializedBytes: f[0])) }
            }
        }
        try collect(1)
        guard case .accept? = replies.first?.body else { Issue.record("expected an accept, got \(replies)"); return }
        var payload = pattern(0, 1000)
        var h = ChunkHeader(); h.index = 0; h.offset = 0; h.length = 1000; h.crc32C = CRC32C.checksum(payload)
        payload[500] ^= 0x10
        try dealer.send([try frame(.chunk(h)), payload])
        try collect(2)
        guard case .error(let e)? = replies.last?.body else { Issue.record("expected an error, got \(replies)"); return }
        #expect(e.code == .checksumMismatch)
        #expect(e.message.contains("chunk 0 failed its checksum"))
        guard case .failure(.checksumMismatch)? = sink.results.first else { Issue.record("the feature should hear of the failure"); return }
        #expect(sink.received.isEmpty, "no corrupt byte is delivered")
    }

    @Test("a transfer to a dead peer fails with a named error after the timeout, not before")
    func deadPeer() throws {
        // A port that was bound and closed: nothing listens there.
        let gone = try DataPlane(config: DataPlaneConfig(nodeID: "gone"))
        let endpoint = gone.endpoint
        gone.close()
        var sc = DataPlaneConfig(nodeID: "s"); sc.peerTimeoutNanos = 300_000_000
        let sender = try DataPlane(config: sc)
        var outcome: Result<Int, DataPlaneError>?
        let start = Date()
        try sender.send(to: PeerAddress(endpoint: endpoint), kind: "kv", totalBytes: 1 << 20, source: source(), done: { outcome = $0 })
        try sender.run(until: { outcome != nil }, timeoutNanos: 10_000_000_000)
        let took = Date().timeIntervalSince(start)
        guard case .failure(.peerUnreachable(let ep, let silence))? = outcome else { Issue.record("expected peerUnreachable, got \(String(describing: outcome))"); return }
        #expect(ep == endpoint)
        #expect(silence >= 300)
        #expect(took >= 0.3)
        #expect(sender.transfersInProgress == 0)
    }

    @Test("with CURVE on, a peer whose key is not authorised cannot deliver a byte")
    func curveRefusesUnknownKey() throws {
        let receiverKeys = try CurveKeyPair.generate(), known = try CurveKeyPair.generate(), stranger = try CurveKeyPair.generate()
        var rc = DataPlaneConfig(nodeID: "r"); rc.keys = receiverKeys; rc.authorizedKeys = [known.publicKey]
        let receiver = try DataPlane(config: rc)
        let sink = CheckingSink()
        receiver.receiver = sink
        let address = PeerAddress(endpoint: receiver.endpoint, publicKey: receiver.publicKey)

        var good = DataPlaneConfig(nodeID: "known"); good.keys = known
        let allowed = try DataPlane(config: good)
        var ok: Result<Int, DataPlaneError>?
        try allowed.send(to: address, kind: "t", totalBytes: 5000, chunkBytes: 1024, source: source(), done: { ok = $0 })
        try drive(allowed, receiver) { ok != nil && !sink.results.isEmpty }
        #expect(try ok?.get() == 5000)
        #expect(sink.received == pattern(0, 5000))

        var bad = DataPlaneConfig(nodeID: "stranger"); bad.keys = stranger; bad.peerTimeoutNanos = 400_000_000
        let refused = try DataPlane(config: bad)
        var outcome: Result<Int, DataPlaneError>?
        try refused.send(to: address, kind: "t", totalBytes: 5000, source: source(), done: { outcome = $0 })
        try drive(refused, receiver) { outcome != nil }
        guard case .failure(.peerUnreachable)? = outcome else { Issue.record("expected the stranger to fail, got \(String(describing: outcome))"); return }
        #expect(receiver.refusedPeers >= 1)
        #expect(sink.results.count == 1, "only the authorised transfer reached the feature")
    }

    @Test("pinned agent keys: a peer naming a node its key may not claim is refused by name; authorized_keys reloads without a restart")
    func pinnedSenders() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dp-pins-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let receiverKeys = try CurveKeyPair.generate(), a = try CurveKeyPair.generate(), later = try CurveKeyPair.generate()
        let file = dir + "/authorized_keys"
        func write(_ entries: [AuthorizedKey]) throws {
            try (entries.map(\.line).joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        }
        try write([AuthorizedKey(publicKey: a.publicKey, role: .agent, nodes: ["gpu-a"])])
        var rc = DataPlaneConfig(nodeID: "r"); rc.keys = receiverKeys
        rc.peerKeys = try KeyDirectory.parseAuthorized(try String(contentsOfFile: file, encoding: .utf8), file: file)
        rc.authorizedKeys = Set(rc.peerKeys.keys); rc.authorizedKeysFile = file
        let receiver = try DataPlane(config: rc)
        let sink = CheckingSink()
        receiver.receiver = sink
        let address = PeerAddress(endpoint: receiver.endpoint, publicKey: receiver.publicKey)

        // Its own node: delivered.
        var own = DataPlaneConfig(nodeID: "gpu-a"); own.keys = a
        let honest = try DataPlane(config: own)
        var ok: Result<Int, DataPlaneError>?
        try honest.send(to: address, kind: "t", totalBytes: 3000, chunkBytes: 1024, source: source(), done: { ok = $0 })
        try drive(honest, receiver) { ok != nil && !sink.results.isEmpty }
        #expect(try ok?.get() == 3000)

        // The same key naming another node: refused, the reason names the node, nothing delivered.
        var spoof = DataPlaneConfig(nodeID: "gpu-b"); spoof.keys = a
        let spoofer = try DataPlane(config: spoof)
        var outcome: Result<Int, DataPlaneError>?
        try spoofer.send(to: address, kind: "t", totalBytes: 3000, source: source(), done: { outcome = $0 })
        try drive(spoofer, receiver) { outcome != nil }
        guard case .failure(let e)? = outcome, "\(e)".contains("gpu-b") else {
            Issue.record("expected a refusal naming gpu-b, got \(String(describing: outcome))"); return
        }
        #expect(receiver.stats.senderRefused >= 1)
        #expect(sink.results.count == 1, "only the honest transfer reached the feature")
        let laterSink = CheckingSink()
        receiver.receiver = laterSink

        // A key added to the file is admitted within a second or two, pinned to its node.
        try write([AuthorizedKey(publicKey: a.publicKey, role: .agent, nodes: ["gpu-a"]),
                   AuthorizedKey(publicKey: later.publicKey, role: .agent, nodes: ["gpu-c"])])
        var lc = DataPlaneConfig(nodeID: "gpu-c"); lc.keys = later
        let newcomer = try DataPlane(config: lc)
        let deadline = Date().addingTimeInterval(5)
        while receiver.stats.keysReloaded == 0 && Date() < deadline { try receiver.pump(); usleep(20_000) }
        #expect(receiver.stats.keysReloaded == 1)
        var late: Result<Int, DataPlaneError>?
        try newcomer.send(to: address, kind: "t", totalBytes: 2000, source: source(), done: { late = $0 })
        try drive(newcomer, receiver) { late != nil }
        #expect(try late?.get() == 2000)
        receiver.receiver = CheckingSink()

        // Removed again: its open connection is refused frame by frame from the reload on.
        try write([AuthorizedKey(publicKey: a.publicKey, role: .agent, nodes: ["gpu-a"])])
        let deadline2 = Date().addingTimeInterval(5)
        while receiver.stats.keysReloaded < 2 && Date() < deadline2 { try receiver.pump(); usleep(20_000) }
        var removed: Result<Int, DataPlaneError>?
        try newcomer.send(to: address, kind: "t", totalBytes: 2000, source: source(), done: { removed = $0 })
        try drive(newcomer, receiver) { removed != nil }
        guard case .failure? = removed else { Issue.record("expected the removed key to be refused, got \(String(describing: removed))"); return }
    }

    @Test("sender pins: known answers")
    func senderRefusalRules() {
        let pinned = AuthorizedKey(publicKey: "K1", role: .agent, nodes: ["gpu-*"]), shared = AuthorizedKey(publicKey: "K2", role: .agent)
        let keys = ["K1": pinned, "K2": shared]
        #expect(DataPlane.senderRefusal(sender: "anyone", userID: nil, peerKeys: nil) == nil)
        #expect(DataPlane.senderRefusal(sender: "gpu-3", userID: "K1", peerKeys: keys) == nil)
        #expect(DataPlane.senderRefusal(sender: "mem-0", userID: "K1", peerKeys: keys)?.contains("mem-0") == true)
        #expect(DataPlane.senderRefusal(sender: "mem-0", userID: "K2", peerKeys: keys) == nil)
        #expect(DataPlane.senderRefusal(sender: "gpu-3", userID: "K9", peerKeys: keys) != nil)
        #expect(DataPlane.senderRefusal(sender: "gpu-3", userID: nil, peerKeys: keys) != nil)
    }

    @Test("chunks shared from the source's arrays (no copy into libzmq) arrive whole; the sender changing an array already handed over does not touch what is sent")
    func sharedChunks() throws {
        for emulated in [false, true] {
            let receiver = try DataPlane(config: DataPlaneConfig(nodeID: "r"))
            let sink = CheckingSink()
            receiver.receiver = sink
            var sc = DataPlaneConfig(nodeID: "s"); sc.window = 8
            if emulated { sc.network = NetworkConditions(delayMs: 1) }   // the emulated link keeps copies of its own
            let sender = try DataPlane(config: sc)
            // Sixteen 4 KiB chunks, each shared from an array of its own; chunk 2 comes from the
            // borrowed source instead. Each time a chunk is asked for, every array handed over
            // before it is overwritten: libzmq may not have sent it yet, and must send it as it was.
            let chunk = 4096, total = 16 * chunk
            var arrays = (0..<16).map { pattern($0 * chunk, chunk) }
            var sharedCalls = 0
            var outcome: Result<Int, DataPlaneError>?
            try sender.send(to: PeerAddress(endpoint: receiver.endpoint), kind: "t", totalBytes: total, chunkBytes: chunk,
                            source: source(), shared: { offset, length in
                                let c = offset / chunk
                                for earlier in 0..<c { for k in arrays[earlier].indices { arrays[earlier][k] = 0xEE } }
                                guard c != 2 else { return nil }
                                sharedCalls += 1
                                return SharedChunk(arrays[c], 0..<length)
                            }, done: { outcome = $0 })
            try drive(sender, receiver) { outcome != nil && !sink.results.isEmpty }
            #expect(try outcome?.get() == total, "emulated \(emulated)")
            #expect(sink.received == pattern(0, total), "every chunk as it was when handed over (emulated \(emulated))")
            #expect(sharedCalls == 15)
            #expect(receiver.stats.framesRejected == 0)
        }
    }

    @Test("the emulated uplink's bandwidth applies to the data plane")
    func emulatedBandwidth() throws {
        let receiver = try DataPlane(config: DataPlaneConfig(nodeID: "r"))
        let sink = CheckingSink()
        receiver.receiver = sink
        var sc = DataPlaneConfig(nodeID: "s")
        sc.network = NetworkConditions(delayMs: 5, bandwidthBytesPerSecond: 2_000_000)   // 2 MB/s
        let sender = try DataPlane(config: sc)
        var outcome: Result<Int, DataPlaneError>?
        let start = Date()
        try sender.send(to: PeerAddress(endpoint: receiver.endpoint), kind: "t", totalBytes: 400_000, chunkBytes: 50_000, source: source(), done: { outcome = $0 })
        try drive(sender, receiver) { outcome != nil }
        let took = Date().timeIntervalSince(start)
        #expect(try outcome?.get() == 400_000)
        // 400 kB at 2 MB/s is 0.2 s at the least; unthrottled loopback takes a few ms.
        #expect(took >= 0.2)
        #expect(sink.received == pattern(0, 400_000))
    }

    @Test("a partition in the node's control file holds a transfer: healed within the timeout it completes, otherwise it fails by name")
    func partitionFromControlFile() throws {
        let dir = NSTemporaryDirectory() + "strato-dp-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let control = dir + "/sender.json"
        let receiver = try DataPlane(config: DataPlaneConfig(nodeID: "r"))
        let sink = CheckingSink()
        receiver.receiver = sink
        var sc = DataPlaneConfig(nodeID: "s"); sc.networkControlFile = control; sc.peerTimeoutNanos = 1_500_000_000
        let sender = try DataPlane(config: sc)

        try #"{"partitioned": true}"#.write(toFile: control, atomically: true, encoding: .utf8)
        try sender.pump()
        #expect(sender.conditions.partitioned)
        var first: Result<Int, DataPlaneError>?
        try sender.send(to: PeerAddress(endpoint: receiver.endpoint), kind: "t", totalBytes: 100_000, chunkBytes: 10_000, source: source(), done: { first = $0 })
        try drive(sender, receiver, seconds: 0.4) { first != nil }
        #expect(first == nil, "nothing gets through a partition")
        #expect(sink.received.isEmpty)
        try FileManager.default.removeItem(atPath: control)
        try drive(sender, receiver) { first != nil && !sink.results.isEmpty }
        #expect(try first?.get() == 100_000, "healed before the timeout, the transfer completes")
        #expect(sink.received == pattern(0, 100_000))

        try #"{"partitioned": true}"#.write(toFile: control, atomically: true, encoding: .utf8)
        usleep(150_000)
        try sender.pump()
        var second: Result<Int, DataPlaneError>?
        try sender.send(to: PeerAddress(endpoint: receiver.endpoint), kind: "t", totalBytes: 100_000, chunkBytes: 10_000, source: source(), done: { second = $0 })
        try drive(sender, receiver, seconds: 10) { second != nil }
        guard case .failure(.peerUnreachable)? = second else { Issue.record("expected peerUnreachable, got \(String(describing: second))"); return }
    }
}
