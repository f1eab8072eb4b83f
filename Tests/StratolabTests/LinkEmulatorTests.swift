import Cluster
import Foundation
import Testing

// The emulated link (pure logic, time by hand) and the text and JSON forms of network conditions.

private let ms: Int64 = 1_000_000
private let t0: Int64 = 1_000_000_000_000

@Suite("Link emulator")
struct LinkEmulatorTests {
    @Test("no conditions: every message is due at once, in order")
    func perfectLink() {
        var link = LinkEmulator<Int>()
        for i in 0..<5 { #expect(link.offer(i, bytes: 100, at: t0) == .queued(releaseAt: t0)) }
        #expect(link.nextDue == t0)
        #expect(link.due(at: t0) == [0, 1, 2, 3, 4])
        #expect(link.nextDue == nil && link.isEmpty)
        #expect(link.stats.delivered == 5 && link.stats.delayed == 0 && link.stats.bytesDelivered == 500)
    }

    @Test("a 50 ms delay with no jitter releases exactly 50 ms later, not a nanosecond before")
    func exactDelay() {
        var link = LinkEmulator<String>(conditions: NetworkConditions(delayMs: 50))
        #expect(link.offer("a", bytes: 10, at: t0) == .queued(releaseAt: t0 + 50 * ms))
        #expect(link.nextDue == t0 + 50 * ms)
        #expect(link.due(at: t0 + 50 * ms - 1).isEmpty)
        #expect(link.pendingCount == 1)
        #expect(link.due(at: t0 + 50 * ms) == ["a"])
        #expect(link.stats.delayed == 1 && link.stats.delivered == 1)
    }

    @Test("1 MB at 8 Mbit/s takes 1 s, and a second one queues behind it")
    func bandwidth() throws {
        let rate = try #require(try NetworkConditions.parseBandwidth("8mbit"))
        #expect(rate == 1_000_000)
        var link = LinkEmulator<Int>(conditions: NetworkConditions(bandwidthBytesPerSecond: rate))
        #expect(link.offer(1, bytes: 1_000_000, at: t0) == .queued(releaseAt: t0 + 1_000_000_000))
        #expect(link.offer(2, bytes: 500_000, at: t0 + 200 * ms) == .queued(releaseAt: t0 + 1_500_000_000))
        #expect(link.due(at: t0 + 999 * ms).isEmpty)
        #expect(link.due(at: t0 + 1000 * ms) == [1])
        #expect(link.nextDue == t0 + 1500 * ms)
        // An idle link keeps no credit: a message after a pause takes its own serialisation time.
        #expect(link.offer(3, bytes: 1000, at: t0 + 5000 * ms) == .queued(releaseAt: t0 + 5001 * ms))
    }

    @Test("bandwidth and delay add: serialisation first, then propagation")
    func bandwidthPlusDelay() {
        var link = LinkEmulator<Int>(conditions: NetworkConditions(delayMs: 20, bandwidthBytesPerSecond: 1_000_000))
        #expect(link.offer(1, bytes: 10_000, at: t0) == .queued(releaseAt: t0 + 30 * ms))
        #expect(link.offer(2, bytes: 10_000, at: t0) == .queued(releaseAt: t0 + 40 * ms))
    }

    @Test("loss 0.3 over 10,000 messages drops 30 % ± 2 % with a fixed seed, and the same seed repeats")
    func loss() {
        func run(seed: UInt64) -> (UInt64, [Int]) {
            var link = LinkEmulator<Int>(conditions: NetworkConditions(loss: 0.3), seed: seed)
            for i in 0..<10_000 { link.offer(i, bytes: 64, at: t0 + Int64(i)) }
            return (link.stats.dropped, link.due(at: t0 + 10_000))
        }
        let (dropped, delivered) = run(seed: 42)
        #expect((2800...3200).contains(dropped), "dropped \(dropped)")
        #expect(UInt64(delivered.count) + dropped == 10_000)
        #expect(delivered == delivered.sorted())
        let again = run(seed: 42)
        #expect(again.0 == dropped && again.1 == delivered)
        #expect(run(seed: 43).1 != delivered)
    }

    @Test("a partition drops everything, counts it, and keeps nothing queued")
    func partition() {
        var link = LinkEmulator<Int>(conditions: NetworkConditions(delayMs: 5, partitioned: true))
        for i in 0..<100 { #expect(link.offer(i, bytes: 10, at: t0 + Int64(i) * ms) == .dropped) }
        #expect(link.isEmpty && link.nextDue == nil)
        #expect(link.stats.dropped == 100 && link.stats.droppedByPartition == 100 && link.stats.bytesDropped == 1000)
        #expect(link.due(at: t0 + 1_000 * ms).isEmpty)
    }

    @Test("jitter stays within ±jitter, never releases before the offer, and never reorders")
    func fifoUnderJitter() {
        var link = LinkEmulator<Int>(conditions: NetworkConditions(delayMs: 10, jitterMs: 10), seed: 7)
        var releases: [Int64] = []
        for i in 0..<2000 {
            let t = t0 + Int64(i) * ms / 2
            guard case .queued(let r) = link.offer(i, bytes: 100, at: t) else { Issue.record("dropped"); return }
            #expect(r >= t && r <= t + 20 * ms, "message \(i) released at +\(Double(r - t) / 1e6) ms")
            releases.append(r)
        }
        #expect(releases == releases.sorted())
        #expect(Set(releases.indices.map { releases[$0] - (t0 + Int64($0) * ms / 2) }).count > 100, "the jitter varies")
        var order: [Int] = []
        var now = t0
        while let next = link.nextDue {
            now = max(now + ms, next)
            order += link.due(at: now)
        }
        #expect(order == Array(0..<2000))
    }

    @Test("the jitter is uniform in [-jitter, +jitter] around the delay (scripted draws)")
    func jitterBounds() {
        var draws = [0.0, 0.5, 0.999_999_999][...]
        var link = LinkEmulator<Int>(conditions: NetworkConditions(delayMs: 100, jitterMs: 30)) { draws.popFirst() ?? 0.5 }
        #expect(link.offer(1, bytes: 1, at: t0) == .queued(releaseAt: t0 + 70 * ms))
        #expect(link.offer(2, bytes: 1, at: t0 + 100 * ms) == .queued(releaseAt: t0 + 200 * ms))
        #expect(link.offer(3, bytes: 1, at: t0 + 200 * ms) == .queued(releaseAt: t0 + 330 * ms))
        // Jitter above the delay: clamped at the offer time, never earlier.
        var low = LinkEmulator<Int>(conditions: NetworkConditions(delayMs: 5, jitterMs: 50)) { 0 }
        #expect(low.offer(1, bytes: 1, at: t0) == .queued(releaseAt: t0))
    }

    @Test("changed conditions apply to new messages only; queued ones keep their release time and order")
    func midStreamChange() {
        var link = LinkEmulator<String>(conditions: NetworkConditions(delayMs: 100))
        #expect(link.offer("slow", bytes: 10, at: t0) == .queued(releaseAt: t0 + 100 * ms))
        link.setConditions(NetworkConditions(delayMs: 10))
        // Would be due at +11 ms, but may not overtake the message before it.
        #expect(link.offer("fast-behind", bytes: 10, at: t0 + 1 * ms) == .queued(releaseAt: t0 + 100 * ms))
        #expect(link.offer("fast", bytes: 10, at: t0 + 200 * ms) == .queued(releaseAt: t0 + 210 * ms))
        link.setConditions(NetworkConditions(partitioned: true))
        #expect(link.offer("cut", bytes: 10, at: t0 + 201 * ms) == .dropped)
        #expect(link.due(at: t0 + 100 * ms) == ["slow", "fast-behind"])
        #expect(link.due(at: t0 + 210 * ms) == ["fast"])
        link.setConditions(.none)
        #expect(link.offer("healed", bytes: 10, at: t0 + 300 * ms) == .queued(releaseAt: t0 + 300 * ms))
        #expect(link.stats.offered == 5 && link.stats.dropped == 1 && link.stats.delivered == 3 && link.stats.delayed == 3)
    }

    @Test("a long stream through a delay keeps working as the queue is compacted")
    func longStream() {
        var link = LinkEmulator<Int>(conditions: NetworkConditions(delayMs: 1))
        var got: [Int] = []
        for i in 0..<50_000 {
            link.offer(i, bytes: 1, at: t0 + Int64(i) * 1000)
            if i % 3000 == 0 { got += link.due(at: t0 + Int64(i) * 1000) }
        }
        got += link.due(at: t0 + 10_000 * ms)
        #expect(got == Array(0..<50_000))
        #expect(link.stats.bytesDelivered == 50_000)
    }
}

@Suite("Network conditions")
struct NetworkConditionsTests {
    @Test("bandwidths parse as bits or bytes per second", arguments: [
        ("100mbit", 12_500_000.0), ("1gbit", 125_000_000), ("1Gbit", 125_000_000), ("512kbit", 64_000),
        ("10MB/s", 10_000_000), ("64KiB/s", 65_536), ("10Mb/s", 1_250_000), ("1.5gbit", 187_500_000),
        ("800bit", 100), ("2 mbit/s", 250_000), (" 1GiB/s ", 1_073_741_824),
    ])
    func bandwidthGood(text: String, bytesPerSecond: Double) throws {
        #expect(try NetworkConditions.parseBandwidth(text) == bytesPerSecond)
    }

    @Test("unlimited means no limit")
    func unlimited() throws {
        #expect(try NetworkConditions.parseBandwidth("unlimited") == nil)
    }

    @Test("bad bandwidths are refused naming the value", arguments: [
        "", "fast", "100", "100mbps", "10MB", "-5mbit", "0mbit", "100 furlongs", "1.2.3mbit", "mbit",
    ])
    func bandwidthBad(text: String) {
        #expect(throws: NetworkConditions.ParseError.self) { try NetworkConditions.parseBandwidth(text) }
        do { _ = try NetworkConditions.parseBandwidth(text) } catch { #expect("\(error)".contains("'\(text)'")) }
    }

    @Test("an ambiguous unit says how to write bits and bytes")
    func ambiguous() {
        do { _ = try NetworkConditions.parseBandwidth("100mbps"); Issue.record("accepted") } catch {
            #expect("\(error)".contains("100mbit") && "\(error)".contains("100MB/s"))
        }
    }

    @Test("rates written for the command line read back exactly", arguments: [12_500_000.0, 1_000_000, 65_536, 0.3, 1234.5])
    func bandwidthRoundTrip(bytesPerSecond: Double) throws {
        #expect(try NetworkConditions.parseBandwidth(NetworkConditions.bandwidthArgument(bytesPerSecond)) == bytesPerSecond)
    }

    @Test("durations and losses parse; bad ones name the value")
    func durationsAndLoss() throws {
        #expect(try NetworkConditions.parseDuration("20ms") == 20)
        #expect(try NetworkConditions.parseDuration("20") == 20)
        #expect(try NetworkConditions.parseDuration("1.5s") == 1500)
        #expect(try NetworkConditions.parseDuration("250us") == 0.25)
        #expect(try NetworkConditions.parseDuration("20min") == 1_200_000)
        for bad in ["90min", "-1ms", "abc", "", "2h", "3 weeks"] {
            #expect(throws: NetworkConditions.ParseError.self) { try NetworkConditions.parseDuration(bad) }
        }
        do { _ = try NetworkConditions.parseDuration("20 furlongs", what: "--net-delay-ms") } catch {
            #expect("\(error)".contains("--net-delay-ms '20 furlongs'"))
        }
        #expect(try NetworkConditions.parseLoss("0.3") == 0.3)
        #expect(try NetworkConditions.parseLoss("30%") == 0.3)
        #expect(try NetworkConditions.parseLoss("0") == 0)
        for bad in ["1.5", "-0.1", "x", "150%", ""] {
            #expect(throws: NetworkConditions.ParseError.self) { try NetworkConditions.parseLoss(bad) }
        }
    }

    @Test("control-file JSON: every key optional, bandwidth as text, unknown keys and bad values refused")
    func json() throws {
        func decode(_ s: String) throws -> NetworkConditions { try NetworkConditions.decodeJSON(Data(s.utf8)) }
        #expect(try decode(#"{"partitioned": true}"#) == NetworkConditions(partitioned: true))
        #expect(try decode("{}") == .none)
        #expect(try decode(#"{"delayMs": 30, "jitterMs": 2, "bandwidth": "10mbit"}"#)
                == NetworkConditions(delayMs: 30, jitterMs: 2, bandwidthBytesPerSecond: 1_250_000))
        let c = NetworkConditions(delayMs: 20, jitterMs: 5, loss: 0.001, bandwidthBytesPerSecond: 12_500_000)
        #expect(try NetworkConditions.decodeJSON(JSONEncoder().encode(c)) == c)
        for (bad, says) in [(#"{"partition": true}"#, "unknown key 'partition'"), (#"{"loss": 2}"#, "loss 2"),
                            (#"{"delayMs": "slow"}"#, "'delayMs' must be a number"), ("{nope", "not valid JSON"),
                            (#"{"bandwidth": "fast"}"#, "'fast'"), (#"{"delayMs": -1}"#, "delay -1")] {
            do { _ = try decode(bad); Issue.record("accepted \(bad)") } catch {
                #expect("\(error)".contains(says), "\(bad): \(error)")
            }
        }
    }

    @Test("conditions describe themselves for the log")
    func describe() {
        #expect(NetworkConditions.none.description == "none")
        #expect(NetworkConditions(delayMs: 20, jitterMs: 5, loss: 0.001, bandwidthBytesPerSecond: 12_500_000).description
                == "delay 20 ms ± 5 ms, loss 0.1 %, 100 Mbit/s")
        #expect(NetworkConditions(partitioned: true).description == "partitioned")
    }
}
