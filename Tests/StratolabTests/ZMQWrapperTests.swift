import Foundation
import Testing
@testable import Wire

// The libzmq wrapper: sockets, polling, contexts, CURVE keys and the ZAP handler. Waits are
// bounded polls (a test fails instead of hanging); nothing asserts on how long anything took.

private let boundedWaitMs = 5000

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Receives one message within the bounded wait, or nil.
private func receiveWithin(_ socket: ZMQSocket, timeoutMs: Int = boundedWaitMs) throws -> [[UInt8]]? {
    guard try ZMQPoller.readable([socket], timeoutMs: timeoutMs)[0] else { return nil }
    return try socket.receive(dontWait: true)
}

/// A DEALER → ROUTER → DEALER round trip of a multipart message over `endpoint`.
private func roundTrip(context: ZMQContext, bindTo endpoint: String) throws {
    let router = try ZMQSocket(context, .router)
    defer { router.close() }
    try router.bind(endpoint)
    let bound = try router.lastEndpoint()
    let dealer = try ZMQSocket(context, .dealer)
    defer { dealer.close() }
    try dealer.setRoutingID(bytes("client-1"))
    try dealer.connect(bound)

    #expect(try dealer.send([bytes("hello"), [], bytes("world")]))
    let request = try #require(try receiveWithin(router))
    #expect(request == [bytes("client-1"), bytes("hello"), [], bytes("world")])

    #expect(try router.send([request[0], bytes("reply"), bytes("two")]))
    let reply = try #require(try receiveWithin(dealer))
    #expect(reply == [bytes("reply"), bytes("two")])
}

@Suite("ZeroMQ wrapper")
struct ZMQWrapperTests {
    @Test("a ROUTER and a DEALER exchange multipart messages over inproc, empty frames included")
    func inprocRoundTrip() throws {
        let context = ZMQContext()
        defer { context.terminate() }
        try roundTrip(context: context, bindTo: "inproc://zmq-wrapper-\(UUID().uuidString)")
    }

    @Test("a lending receive reuses its frames: short and long messages, one after another, and one received inside another's call")
    func lendingReceive() throws {
        let context = ZMQContext()
        defer { context.terminate() }
        let endpoint = "inproc://zmq-lending-\(UUID().uuidString)"
        let router = try ZMQSocket(context, .router)
        defer { router.close() }
        try router.bind(endpoint)
        let dealer = try ZMQSocket(context, .dealer)
        defer { dealer.close() }
        try dealer.setRoutingID(bytes("d"))
        try dealer.connect(endpoint)
        let long = (0..<7).map { bytes("frame-\($0)") }
        for message in [[bytes("a")], long, [bytes("b"), []], long] { #expect(try dealer.send(message)) }
        var got: [[[UInt8]]] = []
        for _ in 0..<4 {
            guard try ZMQPoller.readable([router], timeoutMs: boundedWaitMs)[0] else { break }
            let frames = try router.receive(dontWait: true) { $0.map { [UInt8]($0) } }
            got.append(try #require(frames))
        }
        #expect(got == [[bytes("d"), bytes("a")], [bytes("d")] + long, [bytes("d"), bytes("b"), []], [bytes("d")] + long])
        // A receive inside another's call on the same socket gets frames of its own.
        for message in [[bytes("outer")], [bytes("inner")]] { #expect(try dealer.send(message)) }
        _ = try ZMQPoller.readable([router], timeoutMs: boundedWaitMs)
        let both = try router.receive(dontWait: true) { outer -> [[UInt8]] in
            var inner: [[UInt8]] = []
            for _ in 0..<100 where inner.isEmpty {
                _ = try ZMQPoller.readable([router], timeoutMs: 50)
                inner = try router.receive(dontWait: true) { $0.map { [UInt8]($0) } } ?? []
            }
            return outer.map { [UInt8]($0) } + inner
        }
        #expect(both == [bytes("d"), bytes("outer"), bytes("d"), bytes("inner")])
    }

    @Test("a frame lent without a copy arrives whole over tcp, and libzmq lets go of its owner once it is sent")
    func lentFrame() throws {
        final class Flag: @unchecked Sendable { let lock = NSLock(); var set = false }
        final class Tracked { let flag: Flag; let bytes: [UInt8]; init(_ f: Flag, _ b: [UInt8]) { flag = f; bytes = b }
            deinit { flag.lock.lock(); flag.set = true; flag.lock.unlock() } }
        let context = ZMQContext()
        defer { context.terminate() }
        let router = try ZMQSocket(context, .router)
        defer { router.close() }
        try router.bind("tcp://127.0.0.1:*")
        let dealer = try ZMQSocket(context, .dealer)
        defer { dealer.close() }
        try dealer.connect(try router.lastEndpoint())
        let payload = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let flag = Flag()
        do {
            let owner = Tracked(flag, payload)
            let sent = try owner.bytes.withUnsafeBytes { try dealer.send(head: bytes("header"), lending: UnsafeRawBufferPointer(rebasing: $0[10..<90_010]), owner: owner) }
            #expect(sent)
        }
        let got = try #require(try receiveWithin(router))
        #expect(got.count == 3 && got[1] == bytes("header") && got[2] == Array(payload[10..<90_010]))
        // Released on libzmq's I/O thread once written to the connection: wait for it, bounded.
        var released = false
        for _ in 0..<500 where !released {
            flag.lock.lock(); released = flag.set; flag.lock.unlock()
            if !released { usleep(10_000) }
        }
        #expect(released, "libzmq still holds the lent frame's owner")
    }

    @Test("binding tcp://127.0.0.1:* picks a free port that lastEndpoint() reports and a DEALER can reach")
    func tcpRoundTrip() throws {
        let context = ZMQContext()
        defer { context.terminate() }
        let probe = try ZMQSocket(context, .router)
        try probe.bind("tcp://127.0.0.1:*")
        let endpoint = try probe.lastEndpoint()
        probe.close()
        #expect(endpoint.hasPrefix("tcp://127.0.0.1:"))
        let port = Int(endpoint.split(separator: ":").last ?? "")
        #expect(port != nil && port! > 0)
        try roundTrip(context: context, bindTo: "tcp://127.0.0.1:*")
    }

    @Test("a non-blocking receive on an empty socket returns nil instead of blocking or throwing")
    func receiveDontWaitWhenEmpty() throws {
        let context = ZMQContext()
        defer { context.terminate() }
        let socket = try ZMQSocket(context, .router)
        defer { socket.close() }
        try socket.bind("inproc://empty-\(UUID().uuidString)")
        #expect(try socket.receive(dontWait: true) == nil)
    }

    @Test("the poller reports exactly the sockets that have a message waiting")
    func pollerReadable() throws {
        let context = ZMQContext()
        defer { context.terminate() }
        let a = try ZMQSocket(context, .pair), b = try ZMQSocket(context, .pair)
        let c = try ZMQSocket(context, .pair), d = try ZMQSocket(context, .pair)
        defer { [a, b, c, d].forEach { $0.close() } }
        let ab = "inproc://ab-\(UUID().uuidString)", cd = "inproc://cd-\(UUID().uuidString)"
        try a.bind(ab); try b.connect(ab)
        try c.bind(cd); try d.connect(cd)

        #expect(try ZMQPoller.readable([a, c], timeoutMs: 0) == [false, false])
        try b.send([bytes("ping")])
        #expect(try ZMQPoller.readable([a, c], timeoutMs: boundedWaitMs) == [true, false])
        #expect(try a.receive(dontWait: true) == [bytes("ping")])
        #expect(try ZMQPoller.readable([a, c], timeoutMs: 0) == [false, false])
    }

    @Test("sending to an identity a ROUTER does not know drops the message without throwing")
    func routerUnknownIdentity() throws {
        let context = ZMQContext()
        defer { context.terminate() }
        let router = try ZMQSocket(context, .router)
        defer { router.close() }
        try router.bind("inproc://unknown-\(UUID().uuidString)")
        #expect(throws: Never.self) { try router.send([bytes("nobody"), bytes("lost")]) }
        #expect(throws: Never.self) { try router.send([bytes("nobody"), bytes("lost")], dontWait: true) }
    }

    @Test("closing a socket twice is harmless, and so is terminating a context twice")
    func closeTwice() throws {
        let context = ZMQContext()
        let socket = try ZMQSocket(context, .dealer)
        socket.close()
        socket.close()
        context.terminate()
        context.terminate()
    }

    @Test("terminating the context wakes a blocked receive with an error that says the context is gone")
    func terminateWakesBlockedReceive() throws {
        let context = ZMQContext()
        let socket = try ZMQSocket(context, .pull)
        try socket.bind("inproc://term-\(UUID().uuidString)")
        // A safety bound: should termination not wake it, receive returns nil and the test fails.
        try socket.setOption(ZMQ_RCVTIMEO_OPTION, Int32(boundedWaitMs))
        let terminated = DispatchSemaphore(value: 0)
        Thread {
            context.terminate()   // blocks until the socket below is closed
            terminated.signal()
        }.start()
        var error: ZMQError?
        do {
            _ = try socket.receive()
        } catch let e as ZMQError {
            error = e
        }
        socket.close()
        #expect(error?.isContextTerminated == true)
        #expect(terminated.wait(timeout: .now() + .seconds(10)) == .success)
    }

    @Test("a context reports the libzmq version and CURVE support")
    func libraryFacts() {
        #expect(ZMQContext.libraryVersion.split(separator: ".").count == 3)
        #expect(ZMQContext.hasCurve)
    }
}

@Suite("CURVE keys and ZAP authentication")
struct CurveAuthenticationTests {
    @Test("generated keys are valid Z85, and Z85 encoding and decoding round-trip")
    func z85RoundTrip() throws {
        let pair = try CurveKeyPair.generate()
        #expect(CurveKeyPair.isValidZ85Key(pair.publicKey))
        #expect(CurveKeyPair.isValidZ85Key(pair.secretKey))
        #expect(pair.publicKey != pair.secretKey)
        let binary = try #require(CurveKeyPair.decodeZ85(pair.publicKey))
        #expect(binary.count == 32)
        #expect(CurveKeyPair.encodeZ85(binary) == pair.publicKey)

        let fixed = (0..<32).map { UInt8($0 * 7 & 0xFF) }
        let text = try #require(CurveKeyPair.encodeZ85(fixed))
        #expect(text.utf8.count == 40)
        #expect(CurveKeyPair.decodeZ85(text) == fixed)
    }

    @Test("keys of the wrong length or outside the Z85 alphabet are refused")
    func invalidKeys() throws {
        let key = try CurveKeyPair.generate().publicKey
        #expect(!CurveKeyPair.isValidZ85Key(String(key.dropLast())))
        #expect(!CurveKeyPair.isValidZ85Key(key + "0"))
        #expect(!CurveKeyPair.isValidZ85Key(""))
        #expect(!CurveKeyPair.isValidZ85Key(String(repeating: "~", count: 40)))  // '~' is not Z85
        #expect(CurveKeyPair.decodeZ85("short") == nil)
        #expect(CurveKeyPair.encodeZ85([UInt8](repeating: 0, count: 31)) == nil)
    }

    @Test("the ZAP handler answers 500 to a malformed request, 400 to a non-CURVE or unknown client, 200 to an allowed key")
    func zapReplies() throws {
        let allowed = try CurveKeyPair.generate()
        let stranger = try CurveKeyPair.generate()
        let context = ZMQContext()
        defer { context.terminate() }
        let zap = ZAPAuthenticator(context: context, allowedPublicKeys: [allowed.publicKey])
        func request(mechanism: String, key: [UInt8]) -> [[UInt8]] {
            [bytes("1.0"), bytes("req-7"), bytes("stratolab"), bytes("127.0.0.1"), [], bytes(mechanism), key]
        }
        func status(_ reply: [[UInt8]]) -> String { String(decoding: reply[2], as: UTF8.self) }

        let tooShort = zap.reply(to: [bytes("1.0"), bytes("req-1")])
        #expect(status(tooShort) == "500")
        #expect(tooShort[1] == bytes("req-1"))
        var wrongVersion = request(mechanism: "CURVE", key: CurveKeyPair.decodeZ85(allowed.publicKey)!)
        wrongVersion[0] = bytes("2.0")
        #expect(status(zap.reply(to: wrongVersion)) == "500")
        #expect(status(zap.reply(to: [])) == "500")

        #expect(status(zap.reply(to: request(mechanism: "PLAIN", key: bytes("user")))) == "400")
        #expect(status(zap.reply(to: request(mechanism: "NULL", key: []))) == "400")
        #expect(status(zap.reply(to: request(mechanism: "CURVE", key: [1, 2, 3]))) == "400")
        #expect(status(zap.reply(to: request(mechanism: "CURVE", key: CurveKeyPair.decodeZ85(stranger.publicKey)!))) == "400")

        let ok = zap.reply(to: request(mechanism: "CURVE", key: CurveKeyPair.decodeZ85(allowed.publicKey)!))
        #expect(ok.count == 6)
        #expect(ok[0] == bytes("1.0") && ok[1] == bytes("req-7") && status(ok) == "200")
        #expect(zap.acceptedCount == 1)
        #expect(zap.rejectedCount == 4)
    }

    @Test("over CURVE, a client with an allowed key gets a reply and a client with an unknown key gets none")
    func curveHandshake() throws {
        let serverKeys = try CurveKeyPair.generate()
        let goodKeys = try CurveKeyPair.generate()
        let badKeys = try CurveKeyPair.generate()
        let serverContext = ZMQContext()
        let clientContext = ZMQContext()
        defer { clientContext.terminate(); serverContext.terminate() }

        let rejectedKeys = RejectedKeys()
        let zap = ZAPAuthenticator(context: serverContext, allowedPublicKeys: [goodKeys.publicKey],
                                   onReject: { key, _ in rejectedKeys.add(key) })
        try zap.start()
        defer { zap.stop() }

        let server = try ZMQSocket(serverContext, .router)
        defer { server.close() }
        try server.makeCurveServer(serverKeys)
        try server.bind("tcp://127.0.0.1:*")
        let endpoint = try server.lastEndpoint()

        // The allowed client: request in, reply out.
        let good = try ZMQSocket(clientContext, .dealer)
        defer { good.close() }
        try good.makeCurveClient(goodKeys, serverPublicKey: serverKeys.publicKey)
        try good.connect(endpoint)
        try good.send([bytes("hello")])
        let request = try #require(try receiveWithin(server))
        #expect(request.count == 2 && request[1] == bytes("hello"))
        try server.send([request[0], bytes("welcome")])
        #expect(try receiveWithin(good) == [bytes("welcome")])
        #expect(zap.acceptedCount >= 1)

        // The unknown client: its message never reaches the server and it never hears back.
        let bad = try ZMQSocket(clientContext, .dealer)
        defer { bad.close() }
        try bad.makeCurveClient(badKeys, serverPublicKey: serverKeys.publicKey)
        try bad.connect(endpoint)
        try bad.send([bytes("let me in")])
        #expect(try ZMQPoller.readable([server, bad], timeoutMs: 1500) == [false, false])

        var polls = 0
        while zap.rejectedCount < 1 && polls < 100 {
            _ = try ZMQPoller.readable([bad], timeoutMs: 50)
            polls += 1
        }
        #expect(zap.rejectedCount >= 1)
        #expect(rejectedKeys.contains(badKeys.publicKey))
        #expect(!rejectedKeys.contains(goodKeys.publicKey))
    }
}

/// Keys the ZAP handler refused, collected from its thread.
private final class RejectedKeys: @unchecked Sendable {
    private let lock = NSLock()
    private var keys: Set<String> = []
    func add(_ key: String) { lock.lock(); keys.insert(key); lock.unlock() }
    func contains(_ key: String) -> Bool { lock.lock(); defer { lock.unlock() }; return keys.contains(key) }
}
