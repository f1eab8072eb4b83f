import Foundation
import Protocol
import SwiftProtobuf
import Testing
@testable import Wire

/// The hand-written heartbeat path must write and read exactly what SwiftProtobuf does.
@Suite("Hot-path codec: heartbeats byte for byte as SwiftProtobuf")
struct HotPathCodecTests {
    struct RNG: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 { state &+= 0x9E37_79B9_7F4A_7C15; var z = state; z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9; z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB; return z ^ (z >> 31) }
    }

    /// Values that exercise the edges: zero (omitted), one-byte and ten-byte varints, negatives.
    static func u64(_ r: inout RNG) -> UInt64 { [0, 1, 127, 128, 300, UInt64.max, r.next(), r.next() >> 40][Int(r.next() % 8)] }
    static func i64(_ r: inout RNG) -> Int64 { [0, -1, 1, Int64.min, Int64.max, Int64(bitPattern: r.next())][Int(r.next() % 6)] }
    static func str(_ r: inout RNG) -> String { ["", "gpu-0", "ü-ñø∂é", String(repeating: "x", count: 200), "node-\(r.next() % 1000)"][Int(r.next() % 5)] }
    static func dbl(_ r: inout RNG) -> Double { [0, -0.0, 1.25, .infinity, Double(r.next() % 1000) / 7][Int(r.next() % 5)] }

    static func randomEnvelope(_ r: inout RNG) -> Envelope {
        var e = Envelope()
        e.protocolVersion = r.next() % 4 == 0 ? 0 : currentProtocolVersion
        e.messageID = u64(&r); e.sender = str(&r); e.sentAtUnixNanos = i64(&r); e.recipient = str(&r); e.inReplyTo = u64(&r)
        if r.next() % 3 == 0 {
            var t = TraceContext(); t.traceID = Data((0..<Int(r.next() % 17)).map { _ in UInt8(truncatingIfNeeded: r.next()) })
            t.spanID = u64(&r); t.parentSpanID = u64(&r); t.sampled = r.next() % 2 == 0
            e.trace = t
        }
        if r.next() % 2 == 0 {
            var hb = Heartbeat(); hb.nodeID = str(&r); hb.incarnation = u64(&r); hb.sequence = u64(&r)
            if r.next() % 4 != 0 {
                var t = Telemetry(); t.processCpuSeconds = dbl(&r); t.processRssBytes = u64(&r)
                t.gpus = (0..<Int(r.next() % 9)).map { _ in var g = GpuTelemetry(); g.index = UInt32(truncatingIfNeeded: u64(&r)); g.utilization = dbl(&r); g.memoryUsedBytes = u64(&r); return g }
                t.tiers = (0..<Int(r.next() % 4)).map { i in var x = TierTelemetry(); x.kind = MemoryTierKind(rawValue: i) ?? .unspecified; x.usedBytes = u64(&r); return x }
                t.renderSlotsUsed = UInt32(truncatingIfNeeded: u64(&r)); t.messagesSent = u64(&r); t.messagesReceived = u64(&r)
                hb.telemetry = t
            }
            if r.next() % 2 == 0 { var c = ClockEstimate(); c.offsetNanos = i64(&r); c.errorBoundNanos = i64(&r); c.samples = UInt32(truncatingIfNeeded: u64(&r)); hb.clock = c }
            hb.running = (0..<Int(r.next() % 4)).map { _ in str(&r) }
            hb.reports = (0..<Int(r.next() % 4)).map { _ in
                var f = FeatureReport(); f.feature = str(&r); f.key = str(&r)
                f.body = Data((0..<Int(r.next() % 300)).map { _ in UInt8(truncatingIfNeeded: r.next()) }); return f
            }
            e.body = .heartbeat(hb)
        } else {
            var ack = HeartbeatAck(); ack.nodeID = str(&r); ack.sequence = u64(&r); ack.receivedAtUnixNanos = i64(&r)
            ack.sentAtUnixNanos = i64(&r); ack.coordinatorEpoch = u64(&r)
            ack.settled = (0..<Int(r.next() % 3)).map { _ in var s = SettledReports(); s.feature = str(&r); s.keys = (0..<Int(r.next() % 4)).map { _ in str(&r) }; return s }
            e.body = .heartbeatAck(ack)
        }
        return e
    }

    @Test("2,000 random heartbeats and acks: the same bytes as SwiftProtobuf, and read back the same")
    func sameBytes() throws {
        var r = RNG(state: 42)
        for _ in 0..<2000 {
            let e = Self.randomEnvelope(&r)
            let reference: [UInt8] = try e.serializedBytes()
            let fast = try #require(HotPathCodec.encode(e), "the hot path takes every heartbeat and ack")
            #expect(fast == reference)
            let back = try #require(HotPathCodec.decode(reference), "and reads it")
            #expect(back == (try Envelope(serializedBytes: reference)))
        }
    }

    @Test("header and body (the coordinator's and agent's path): the same bytes both ways, decoded in place, same errors")
    func headerAndBody() throws {
        let codec = EnvelopeCodec()
        var r = RNG(state: 99)
        var hot = 0
        for _ in 0..<1000 {
            let e = Self.randomEnvelope(&r)
            let body: HotBody = e.body.flatMap { if case .heartbeat(let hb) = $0 { return .heartbeat(hb) } else { return nil } } ?? .heartbeatAck(e.heartbeatAck)
            let bytes = codec.encode(EnvelopeHeader(e), body)
            #expect(bytes == (try e.serializedBytes() as [UInt8]))
            let frame = bytes.withUnsafeBytes { try? codec.decodeFrame($0) }
            if e.protocolVersion != currentProtocolVersion {
                #expect(throws: EnvelopeDecodeError.unsupportedVersion(e.protocolVersion)) { try bytes.withUnsafeBytes { try codec.decodeFrame($0) } }
                continue
            }
            let h: EnvelopeHeader, b: HotBody
            switch frame {
            case .heartbeat(let f)?: h = f.header; b = .heartbeat(f.heartbeat)
            case .heartbeatAck(let f)?: h = f.header; b = .heartbeatAck(f.ack)
            default: Issue.record("a heartbeat or ack comes back as header and body"); continue
            }
            hot += 1
            #expect(h == EnvelopeHeader(e) && b == body)
            #expect(Envelope(h, b) == e && frame?.envelope == e && frame?.header == h)
        }
        #expect(hot > 500)
        // Anything else comes back as an envelope; a frame over the limit is refused by size.
        let status = Envelope.make(sender: "op", messageID: 1, sentAtNanos: 1, body: .statusRequest(StatusRequest()))
        let statusBytes: [UInt8] = try status.serializedBytes()
        guard case .envelope(let back)? = statusBytes.withUnsafeBytes({ try? codec.decodeFrame($0) }) else { Issue.record("status request"); return }
        #expect(back == status)
        let small = EnvelopeCodec(maxFrameBytes: 4)
        #expect(throws: EnvelopeDecodeError.frameTooLarge(size: statusBytes.count, limit: 4)) { try statusBytes.withUnsafeBytes { try small.decodeFrame($0) } }
    }

    @Test("mutated and truncated frames: the hot path reads only what SwiftProtobuf reads identically; the rest falls back")
    func mutatedFrames() throws {
        var r = RNG(state: 7)
        var read = 0, fellBack = 0
        for _ in 0..<5000 {
            var frame: [UInt8] = try Self.randomEnvelope(&r).serializedBytes()
            guard !frame.isEmpty else { continue }
            for _ in 0..<Int(1 + r.next() % 3) { frame[Int(r.next() % UInt64(frame.count))] ^= UInt8(1 + r.next() % 255) }
            if r.next() % 4 == 0 { frame = Array(frame.prefix(Int(r.next() % UInt64(frame.count)))) }
            let reference = try? Envelope(serializedBytes: frame)
            if let fast = HotPathCodec.decode(frame) {
                read += 1
                // Compared as SwiftProtobuf re-serializes them: bit for bit, NaN included (NaN ≠ NaN under ==).
                let same = try reference.map { try $0.serializedBytes() as [UInt8] } == (try fast.serializedBytes() as [UInt8])
                #expect(same, "the hot path read a frame differently from SwiftProtobuf: \(fast) vs \(String(describing: reference))")
            } else { fellBack += 1 }
        }
        #expect(read > 100 && fellBack > 100, "both paths exercised: \(read) read, \(fellBack) fell back")
    }

    @Test("telemetry kept as bytes (the coordinator's path): the same frames taken, the same heartbeat once decoded")
    func telemetryAsBytes() throws {
        var r = RNG(state: 1234)
        var taken = 0, refused = 0, kept = 0
        for k in 0..<5000 {
            var frame: [UInt8] = try Self.randomEnvelope(&r).serializedBytes()
            // Half as sent, half mutated: the lazy path must accept and refuse exactly as the full one.
            if k % 2 == 1, !frame.isEmpty {
                for _ in 0..<Int(1 + r.next() % 3) { frame[Int(r.next() % UInt64(frame.count))] ^= UInt8(1 + r.next() % 255) }
            }
            let full = HotPathCodec.decode(frame)
            let lazy = frame.withUnsafeBufferPointer { HotPathCodec.decodeFrame($0, telemetryAsBytes: true) }
            #expect((full == nil) == (lazy == nil), "frame \(k): taken by one path and not the other")
            guard let full, let lazy else { refused += 1; continue }
            taken += 1
            if case .heartbeat(let f) = lazy {
                #expect(!f.withoutTelemetry.hasTelemetry)
                if f.telemetry != nil { kept += 1 }
                // As serialized: a mutated double may be NaN, which is not equal to itself.
                if f.telemetry != nil {
                    #expect(try f.heartbeat.telemetry.serializedBytes() as [UInt8] == (try full.heartbeat.telemetry.serializedBytes() as [UInt8]))
                }
            }
            #expect(try lazy.envelope.serializedBytes() as [UInt8] == (try full.serializedBytes() as [UInt8]))
        }
        #expect(taken > 1000 && refused > 500 && kept > 500, "\(taken) taken, \(refused) refused, \(kept) with telemetry")
    }

    @Test("telemetry bytes: short ones held inline, long ones spilled, both decode to what was sent")
    func telemetryBytesStorage() throws {
        var small = Telemetry(); small.processCpuSeconds = 1.5
        small.gpus = [GpuTelemetry.with { $0.index = 0; $0.utilization = 0.25; $0.memoryUsedBytes = 1 << 30 }]
        var large = small
        large.gpus = (0..<8).map { i in GpuTelemetry.with { $0.index = UInt32(i); $0.utilization = 0.5; $0.memoryUsedBytes = .max } }
        large.messagesSent = .max
        let smallBytes: [UInt8] = try small.serializedBytes(), largeBytes: [UInt8] = try large.serializedBytes()
        #expect(smallBytes.count <= TelemetryBytes.inlineCapacity && largeBytes.count > TelemetryBytes.inlineCapacity)
        for (t, b) in [(small, smallBytes), (large, largeBytes)] {
            let kept = TelemetryBytes(t)
            #expect(kept.bytes == b)
            #expect(kept.decoded() == t)
            #expect(kept == b.withUnsafeBytes { TelemetryBytes(checked: $0) })
        }
        #expect(TelemetryBytes(small) != TelemetryBytes(large))
        #expect(TelemetryBytes(Telemetry()).decoded() == Telemetry())
    }

    @Test("other bodies, unknown fields and repeated singular fields go to SwiftProtobuf")
    func fallsBack() throws {
        let status = Envelope.make(sender: "op", messageID: 1, sentAtNanos: 1, body: .statusRequest(StatusRequest()))
        #expect(HotPathCodec.encode(status) == nil)
        #expect(HotPathCodec.decode(try status.serializedBytes()) == nil)
        var hb = Heartbeat(); hb.nodeID = "n"
        var e = Envelope.make(sender: "n", messageID: 2, sentAtNanos: 3, body: .heartbeat(hb))
        var bytes: [UInt8] = try e.serializedBytes()
        bytes += [0xA8, 0x06, 0x01]   // field 101, varint 1: unknown to this build
        #expect(HotPathCodec.decode(bytes) == nil)
        let withUnknown = try Envelope(serializedBytes: bytes)
        #expect(HotPathCodec.encode(withUnknown) == nil, "unknown fields are kept by SwiftProtobuf's encoder")
        e.messageID = 5
        let twice: [UInt8] = try e.serializedBytes() + [0x10, 0x09]   // message_id again: the last wins in protobuf
        #expect(HotPathCodec.decode(twice) == nil)
        #expect(try EnvelopeCodec().decode(twice).messageID == 9)
    }
}
