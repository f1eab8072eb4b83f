import Cluster
import Foundation
import Protocol
import Testing
import Wire

extension MultiProcess {
@Suite("Bad input to a live coordinator")
struct BadInputTests {
    static func counters(_ s: StatusReply) -> [String: UInt64] {
        Dictionary(uniqueKeysWithValues: s.counters.map { ($0.name, $0.value) })
    }

    @Test("thousands of random and mutated frames are answered or counted, and nothing crashes or is lost")
    func fuzzLiveCoordinator() throws {
        let cluster = try TestCluster(name: "fuzz", security: .open, nodes: """
              - {id: gpu-f, kind: gpu, gpu: {model: H100, count: 8}}
              - {id: mem-f, kind: memory, tiers: [dram:128MiB]}
            """)
        defer { cluster.shutdown() }
        let c = try cluster.client()
        defer { c.close() }
        var rng = SystemRandomNumberGenerator()
        let codec = EnvelopeCodec()
        var hb = Heartbeat(); hb.nodeID = "gpu-f"; hb.incarnation = 99
        let valid = codec.encode(Envelope.make(sender: "fuzzer", messageID: 7, sentAtNanos: 1, body: .heartbeat(hb)))
        var answered = 0
        for i in 0..<3000 {
            var frame: [UInt8]
            if i % 2 == 0 {
                frame = (0..<Int.random(in: 0...200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            } else {
                frame = valid
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    let p = Int.random(in: 0..<frame.count, using: &rng)
                    frame[p] ^= UInt8.random(in: 1...255, using: &rng)
                }
                if Int.random(in: 0..<4, using: &rng) == 0 { frame = Array(frame.prefix(Int.random(in: 0..<frame.count, using: &rng))) }
            }
            // Fire and forget most, wait for the answer on some so the queue stays bounded.
            if i % 100 == 0 {
                if try c.sendRaw([frame], timeoutMs: 2000) != nil { answered += 1 }
            } else {
                try c.sendRaw([frame], timeoutMs: 0).map { _ in answered += 1 }
            }
        }
        #expect(answered > 0)
        let s = try cluster.status()
        let k = BadInputTests.counters(s)
        #expect((k["rejected_malformed"] ?? 0) + (k["rejected_unsupported_version"] ?? 0) + (k["rejected_unknown_body"] ?? 0) > 100)
        #expect(s.nodes.count == 2)
        try cluster.waitFor("both nodes alive after the flood", seconds: 5) {
            try cluster.status().nodes.allSatisfy { $0.state == .alive && $0.incarnation == 1 }
        }
    }

    @Test("each kind of bad message gets an error reply naming the problem")
    func namedErrors() throws {
        let cluster = try TestCluster(name: "bad", security: .open, nodes: "  - {id: gpu-x, kind: gpu, gpu: {model: A10, count: 2}}")
        defer { cluster.shutdown() }
        let c = try cluster.client()
        defer { c.close() }
        let codec = EnvelopeCodec(maxFrameBytes: 64 << 20)

        // Wrong protocol version.
        var wrong = Envelope.make(sender: "t", messageID: 1, sentAtNanos: 1, body: .statusRequest(StatusRequest()))
        wrong.protocolVersion = 9
        var reply = try #require(try c.sendRaw([codec.encode(wrong)]))
        #expect(reply.error.code == .unsupportedVersion)
        #expect(reply.error.message.contains("9"))
        #expect(reply.error.offendingMessageID == 1, "the error names the message it answers")

        // Over the 1 MiB frame limit.
        reply = try #require(try c.sendRaw([[UInt8](repeating: 0x41, count: (1 << 20) + 1)]))
        #expect(reply.error.code == .frameTooLarge)

        // Malformed bytes.
        reply = try #require(try c.sendRaw([[0xFF, 0xFF, 0xFF, 0x0F, 0x01]]))
        #expect(reply.error.code == .malformed)

        // A body the coordinator does not accept, and an envelope with no body.
        let ack = Envelope.make(sender: "t", messageID: 2, sentAtNanos: 1, body: .registerAck(RegisterAck()))
        reply = try #require(try c.sendRaw([codec.encode(ack)]))
        #expect(reply.error.code == .unknownBody)
        var empty = ack; empty.body = nil
        reply = try #require(try c.sendRaw([codec.encode(empty)]))
        #expect(reply.error.code == .unknownBody)

        // Impossible resources.
        var r = Register()
        r.nodeID = "gpu-impossible"; r.kind = .gpu; r.instanceID = "x"
        var g = GpuCapabilities(); g.model = "A100-80GB"; g.count = 1000; g.memoryBytesPerGpu = 1; g.memoryBandwidthGbps = 1
        r.capabilities.gpu = g
        reply = try #require(try c.sendRaw([codec.encode(Envelope.make(sender: "gpu-impossible", messageID: 3, sentAtNanos: 1, body: .register(r)))]))
        #expect(reply.error.code == .invalidRegistration)
        #expect(reply.error.message.contains("gpu.count"))
        #expect(reply.error.message.contains("memory_bytes_per_gpu 1 is implausible"), "\(reply.error.message)")
        #expect(reply.error.offendingMessageID == 3)

        // A second node claiming a live node's id.
        var dup = Register()
        dup.nodeID = "gpu-x"; dup.kind = .gpu; dup.instanceID = "another-process"
        dup.capabilities.gpu = GPUCatalogFixture.a10
        reply = try #require(try c.sendRaw([codec.encode(Envelope.make(sender: "gpu-x", messageID: 4, sentAtNanos: 1, body: .register(dup)))]))
        #expect(reply.error.code == .nodeIDConflict)
        #expect(reply.error.offendingMessageID == 4)

        let s = try cluster.status()
        let k = BadInputTests.counters(s)
        for name in ["rejected_unsupported_version", "rejected_frame_too_large", "rejected_malformed", "rejected_unknown_body",
                     "rejected_invalid_registration", "rejected_node_id_conflict"] {
            #expect((k[name] ?? 0) >= 1, "counter \(name)")
        }
        // The live node kept its id and its life.
        #expect(s.nodes.first { $0.nodeID == "gpu-x" }?.incarnation == 1)
        #expect(!s.nodes.contains { $0.nodeID == "gpu-impossible" })
    }
}

}

enum GPUCatalogFixture {
    static var a10: GpuCapabilities {
        var g = GpuCapabilities()
        g.model = "A10"; g.count = 2; g.memoryBytesPerGpu = 24 << 30; g.memoryBandwidthGbps = 600; g.fp16Tflops = 125
        return g
    }
}
