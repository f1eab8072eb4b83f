import Foundation
import MemoryAgent
import Protocol
import Scheduling
import Testing
import Wire

// The envelope codec is pure: bytes in, envelope or classified error out.

private func sampleBodies() -> [Envelope.OneOf_Body] {
    var reg = Register()
    reg.nodeID = "gpu-1"
    reg.kind = .gpu
    reg.instanceID = "i1"
    reg.labels = ["rack": "r7", "zone": "eu"]
    reg.running = ["model-a", "model-b"]
    reg.capabilities.gpu = GPUCatalog.capabilities(for: GPUCatalog.model(named: "H100")!, count: 8)

    var hb = Heartbeat()
    hb.nodeID = "gpu-1"
    hb.incarnation = 3
    hb.sequence = 99
    var g = GpuTelemetry(); g.index = 1; g.utilization = 0.5; g.memoryUsedBytes = 1 << 30
    hb.telemetry.gpus = [g]
    hb.clock.offsetNanos = -1234
    hb.clock.errorBoundNanos = 56

    var cmd = Command()
    cmd.commandID = 42
    cmd.nodeID = "mem-1"
    cmd.setLabels.labels = ["tier": "hot"]

    var err = ErrorReply()
    err.code = .malformed
    err.message = "bad bytes"
    err.offendingMessageID = 17

    var ack = RegisterAck(); ack.nodeID = "gpu-1"; ack.incarnation = 2; ack.heartbeatIntervalMs = 250

    return [.register(reg), .heartbeat(hb), .command(cmd), .error(err), .registerAck(ack), .statusRequest(StatusRequest())]
}

@Suite("Envelope codec")
struct EnvelopeCodecTests {
    @Test("every body kind survives an encode/decode round trip unchanged", arguments: sampleBodies().indices)
    func roundTrip(index: Int) throws {
        let codec = EnvelopeCodec()
        var e = Envelope.make(sender: "gpu-1", messageID: UInt64(100 + index), sentAtNanos: 1_700_000_000_000_000_000,
                              recipient: "coordinator", inReplyTo: 5, body: sampleBodies()[index])
        e.trace.traceID = Data(repeating: 0xAB, count: 16)
        e.trace.spanID = 7
        let decoded = try codec.decode(codec.encode(e))
        #expect(decoded == e)
        #expect(decoded.protocolVersion == currentProtocolVersion)
        #expect(decoded.bodyName != "none")
    }

    @Test("a frame over the size limit is refused as too large before it is parsed")
    func frameTooLarge() throws {
        let codec = EnvelopeCodec(maxFrameBytes: 64)
        let big = [UInt8](repeating: 0xFF, count: 65)
        #expect(throws: EnvelopeDecodeError.frameTooLarge(size: 65, limit: 64)) { try codec.decode(big) }
        // A valid envelope that is too big is refused just the same.
        var reg = Register(); reg.nodeID = String(repeating: "x", count: 100)
        let frame = codec.encode(.make(sender: "s", messageID: 1, sentAtNanos: 0, body: .register(reg)))
        #expect(throws: EnvelopeDecodeError.frameTooLarge(size: frame.count, limit: 64)) { try codec.decode(frame) }
        #expect(EnvelopeDecodeError.frameTooLarge(size: 65, limit: 64).code == .frameTooLarge)
    }

    @Test("bytes that are not a protobuf envelope are classified as malformed")
    func garbage() {
        let codec = EnvelopeCodec()
        // Field 1 as a length-delimited field whose length runs past the end of the frame.
        let truncated: [UInt8] = [0x0A, 0x7F, 0x01]
        do {
            _ = try codec.decode(truncated)
            Issue.record("a truncated frame decoded")
        } catch let e as EnvelopeDecodeError {
            guard case .malformed = e else { Issue.record("expected .malformed, got \(e)"); return }
            #expect(e.code == .malformed)
            #expect(e.counterName == "rejected_malformed")
        } catch {
            Issue.record("unexpected error type \(error)")
        }
        // A varint that never ends.
        #expect(throws: EnvelopeDecodeError.self) { try codec.decode([0x08] + [UInt8](repeating: 0xFF, count: 11)) }
    }

    @Test("an envelope of another protocol version is refused as unsupported")
    func wrongVersion() {
        let codec = EnvelopeCodec()
        var e = Envelope.make(sender: "a", messageID: 1, sentAtNanos: 0, body: sampleBodies()[1])
        e.protocolVersion = currentProtocolVersion + 1
        #expect(throws: EnvelopeDecodeError.unsupportedVersion(currentProtocolVersion + 1)) { try codec.decode(codec.encode(e)) }
        e.protocolVersion = 0
        #expect(throws: EnvelopeDecodeError.unsupportedVersion(0)) { try codec.decode(codec.encode(e)) }
        // Protocol 1 (job reports and commands in the core messages) is no longer spoken.
        #expect(currentProtocolVersion == 2)
        e.protocolVersion = 1
        #expect(throws: EnvelopeDecodeError.unsupportedVersion(1)) { try codec.decode(codec.encode(e)) }
        #expect(EnvelopeDecodeError.unsupportedVersion(0).code == .unsupportedVersion)
    }

    @Test("an envelope without a body is refused, naming its message id")
    func missingBody() {
        let codec = EnvelopeCodec()
        var e = Envelope.make(sender: "a", messageID: 77, sentAtNanos: 0, body: sampleBodies()[0])
        e.body = nil
        #expect(throws: EnvelopeDecodeError.missingBody(messageID: 77)) { try codec.decode(codec.encode(e)) }
        #expect(codec.messageIDIfReadable(codec.encode(e)) == 77)
        #expect(EnvelopeDecodeError.missingBody(messageID: 77).code == .unknownBody)
        #expect(e.bodyName == "none")
    }

    @Test("the message id of an unreadable frame is reported as 0")
    func messageIDOfGarbage() {
        let codec = EnvelopeCodec(maxFrameBytes: 8)
        #expect(codec.messageIDIfReadable([0x0A, 0x7F]) == 0)
        #expect(codec.messageIDIfReadable([UInt8](repeating: 0, count: 9)) == 0)
    }

    @Test("5,000 random frames and 5,000 mutated valid frames either decode or throw EnvelopeDecodeError, never crash")
    func fuzz() {
        let codec = EnvelopeCodec(maxFrameBytes: 4096)
        var rng = SplitMix64(seed: 0xC0DEC)
        let seeds = sampleBodies().enumerated().map { i, body in
            codec.encode(Envelope.make(sender: "fuzz", messageID: UInt64(i + 1), sentAtNanos: Int64(i), body: body))
        }
        func byte() -> UInt8 { UInt8(truncatingIfNeeded: rng.next()) }
        func below(_ n: Int) -> Int { Int(rng.next() % UInt64(max(n, 1))) }

        var decoded = 0, rejected = 0, otherErrors = 0
        func attempt(_ frame: [UInt8]) {
            do {
                _ = try codec.decode(frame)
                decoded += 1
            } catch is EnvelopeDecodeError {
                rejected += 1
            } catch {
                otherErrors += 1
            }
        }

        for _ in 0..<5_000 {
            attempt((0..<below(512)).map { _ in byte() })
        }
        for i in 0..<5_000 {
            var frame = seeds[i % seeds.count]
            for _ in 0..<(1 + below(3)) {
                switch below(4) {
                case 0:  // flip one bit
                    if !frame.isEmpty { frame[below(frame.count)] ^= 1 << UInt8(below(8)) }
                case 1:  // truncate
                    frame = Array(frame.prefix(below(frame.count + 1)))
                case 2:  // append bytes
                    frame += (0..<(1 + below(8))).map { _ in byte() }
                default:  // insert bytes
                    frame.insert(contentsOf: (0..<(1 + below(4))).map { _ in byte() }, at: below(frame.count + 1))
                }
            }
            attempt(frame)
        }
        #expect(otherErrors == 0)
        #expect(decoded > 0)
        #expect(rejected > 0)
        #expect(decoded + rejected == 10_000)
    }
}
