import Foundation
import Logging
import Testing
@testable import Cluster
import Wire

// The agent's emulated network glue: real sockets (inproc), time by hand, and the control file.

/// Keeps every log line, so tests can count them.
private final class LogLines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [(Logger.Level, String)] = []
    func add(_ level: Logger.Level, _ s: String) { lock.lock(); lines.append((level, s)); lock.unlock() }
    func count(_ level: Logger.Level, containing s: String) -> Int {
        lock.lock(); defer { lock.unlock() }
        return lines.filter { $0.0 == level && $0.1.contains(s) }.count
    }
}

private struct CapturingHandler: LogHandler {
    let sink: LogLines
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        let all = (event.metadata ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        sink.add(event.level, "\(event.message) \(all)")
    }
}

/// A DEALER (the agent's end) connected to a ROUTER (the coordinator's) over inproc.
private final class Pair {
    let context = ZMQContext()
    let router: ZMQSocket
    let dealer: ZMQSocket

    init() throws {
        router = try ZMQSocket(context, .router)
        let endpoint = "inproc://emulated-net-\(UUID().uuidString)"
        try router.bind(endpoint)
        dealer = try ZMQSocket(context, .dealer)
        try dealer.connect(endpoint)
    }

    /// What the ROUTER has received (the payload frames, without the routing id), waiting briefly.
    func drain(waitMs: Int = 100) throws -> [[UInt8]] {
        var out: [[UInt8]] = []
        while try ZMQPoller.readable([router], timeoutMs: out.isEmpty ? waitMs : 0)[0] {
            guard let m = try router.receive(dontWait: true) else { break }
            out.append(m[1])
        }
        return out
    }

    func close() { dealer.close(); router.close(); context.terminate() }
}

@Suite("Emulated network")
struct EmulatedNetworkTests {
    let clock = ManualClock()
    private let logs = LogLines()
    var logger: Logger { let sink = logs; return Logger(label: "test") { _ in CapturingHandler(sink: sink) } }

    @Test("with no conditions and no control file, an agent has no emulated network")
    func absentWhenNotConfigured() {
        #expect(EmulatedNetwork.make(config: AgentSessionConfig(), clock: clock, logger: logger) == nil)
        var c = AgentSessionConfig()
        c.networkControlFile = "/nonexistent/net.json"
        #expect(EmulatedNetwork.make(config: c, clock: clock, logger: logger) != nil)
        c = AgentSessionConfig()
        c.network.delayMs = 1
        #expect(EmulatedNetwork.make(config: c, clock: clock, logger: logger) != nil)
    }

    @Test("outgoing messages reach the socket when due, and the poll timeout says when that is")
    func delayedSend() throws {
        let pair = try Pair()
        defer { pair.close() }
        let net = EmulatedNetwork(configured: NetworkConditions(delayMs: 30), controlFile: nil, clock: clock, logger: logger, seed: 1)
        let start = clock.monotonicNanos()
        #expect(net.send([1, 2, 3], pair.dealer))
        #expect(net.pollTimeoutMs(50, now: start) == 30)
        net.pump(pair.dealer) { _ in }
        #expect(try pair.drain(waitMs: 50).isEmpty)
        clock.advance(byMillis: 29)
        #expect(net.pollTimeoutMs(50, now: clock.monotonicNanos()) == 1)
        net.pump(pair.dealer) { _ in }
        #expect(try pair.drain(waitMs: 50).isEmpty)
        clock.advance(byMillis: 1)
        #expect(net.pollTimeoutMs(50, now: clock.monotonicNanos()) == 0)
        net.pump(pair.dealer) { _ in }
        #expect(try pair.drain() == [[1, 2, 3]])
        #expect(net.pollTimeoutMs(50, now: clock.monotonicNanos()) == 50)
    }

    @Test("incoming frames are handed over when due, in order")
    func delayedReceive() throws {
        let pair = try Pair()
        defer { pair.close() }
        let net = EmulatedNetwork(configured: NetworkConditions(delayMs: 10, jitterMs: 5), controlFile: nil, clock: clock, logger: logger, seed: 3)
        for i in 0..<20 {
            #expect(net.takesIncoming([[UInt8(i)]]))
            clock.advance(byMillis: 1)
        }
        var got: [UInt8] = []
        net.pump(pair.dealer) { got.append($0[0][0]) }
        #expect(got.count < 20)
        clock.advance(byMillis: 100)
        net.pump(pair.dealer) { got.append($0[0][0]) }
        #expect(got == Array(0..<20))
    }

    @Test("with no conditions in force, messages skip the emulated link (and are counted nowhere)")
    func passThrough() throws {
        let pair = try Pair()
        defer { pair.close() }
        let net = EmulatedNetwork(configured: .none, controlFile: "/nonexistent/net.json", clock: clock, logger: logger, seed: 5)
        net.pump(pair.dealer) { _ in Issue.record("nothing to deliver") }
        #expect(net.send([4], pair.dealer))
        #expect(!net.takesIncoming([[5]]))
        #expect(try pair.drain() == [[4]])
        #expect(net.outgoingStats.offered == 0 && net.incomingStats.offered == 0)
        #expect(net.pollTimeoutMs(50, now: clock.monotonicNanos()) == 50)
    }

    @Test("the control file partitions and heals, is looked at no more than every 100 ms, and a bad one is logged once and ignored")
    func controlFile() throws {
        let pair = try Pair()
        defer { pair.close() }
        let dir = NSTemporaryDirectory() + "strato-netctl-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/node.json"
        let configured = NetworkConditions(delayMs: 5)
        let net = EmulatedNetwork(configured: configured, controlFile: file, clock: clock, logger: logger, seed: 9)
        func step(_ ms: Int64) { clock.advance(byMillis: ms); net.pump(pair.dealer) { _ in } }

        step(0)
        #expect(net.current == configured)
        try #"{"partitioned": true}"#.write(toFile: file, atomically: true, encoding: .utf8)
        step(50)
        #expect(net.current == configured, "not looked at again within 100 ms")
        step(50)
        #expect(net.current == NetworkConditions(partitioned: true))
        #expect(logs.count(.notice, containing: "network conditions changed") == 1)
        #expect(net.send([7], pair.dealer))
        step(100)
        #expect(try pair.drain(waitMs: 50).isEmpty, "a partition drops what is sent")

        try "".write(toFile: file, atomically: true, encoding: .utf8)
        step(100)
        #expect(net.current == NetworkConditions(partitioned: true), "an empty file is taken as not written yet")
        #expect(logs.count(.error, containing: "ignoring") == 0)

        try #"{"partitioned": tru"#.write(toFile: file, atomically: true, encoding: .utf8)
        step(100)
        step(100)
        try #"{"partitioned": tru"#.write(toFile: file, atomically: true, encoding: .utf8)
        step(100)
        #expect(net.current == NetworkConditions(partitioned: true), "a malformed file changes nothing")
        #expect(logs.count(.error, containing: "ignoring the network control file \(file): not valid JSON") == 1)

        try #"{"delayMs": 40, "bandwidth": "100mbit"}"#.write(toFile: file, atomically: true, encoding: .utf8)
        step(100)
        #expect(net.current == NetworkConditions(delayMs: 40, bandwidthBytesPerSecond: 12_500_000))
        try #"{"delayMs": 40, "los": 0.5}"#.write(toFile: file, atomically: true, encoding: .utf8)
        step(100)
        #expect(logs.count(.error, containing: "unknown key 'los'") == 1)

        try FileManager.default.removeItem(atPath: file)
        step(100)
        #expect(net.current == configured, "no file: back to the configured conditions")
        #expect(logs.count(.notice, containing: "network conditions changed") == 3)
        #expect(net.send([8], pair.dealer))
        step(5)
        #expect(try pair.drain() == [[8]])
    }
}
