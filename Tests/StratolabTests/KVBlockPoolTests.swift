import DataPlane
import Protocol
import Foundation
import Scheduling
import Testing
import Wire
@testable import Features

/// Receives KV blocks of one request into a pool, checking every byte on the way in.
private final class PoolSink: DataPlaneReceiver {
    let pool: KVBlockPool
    let request: String
    var errors: [String] = []
    var results: [Result<Int, DataPlaneError>] = []
    init(_ pool: KVBlockPool, request: String) { self.pool = pool; self.request = request }
    func shouldAccept(from sender: String, transfer: UInt64, offer: TransferOffer) -> String? { nil }
    func consume(from sender: String, transfer: UInt64, offset: Int, bytes: UnsafeRawBufferPointer) throws {
        var at = 0
        while at < bytes.count {
            let pos = offset + at, block = pos / pool.blockBytes, within = pos % pool.blockBytes
            let n = min(bytes.count - at, pool.blockBytes - within)
            do { try pool.write(request, block: block, offset: within, bytes: UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)])) } catch { errors.append("\(error)") }
            at += n
        }
    }
    func finished(from sender: String, transfer: UInt64, result: Result<Int, DataPlaneError>) { results.append(result) }
}

@Suite("KV block pool")
struct KVBlockPoolTests {
    /// Word `index` of a block as the contents are defined (the definition, written out here
    /// apart from the C code that makes and checks them).
    private static func definedWord(request: String, block: Int, index: Int) -> UInt64 {
        let seed = request.utf8.reduce(UInt64(0xCBF2_9CE4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 }
        var x = seed &+ UInt64(block) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(index) &* 0xBF58_476D_1CE4_E5B9
        x ^= x >> 31
        return x &* 0x94D0_49BB_1331_11EB
    }

    /// The levels this CPU runs: the scalar loop, and AVX2 where it has it.
    private static let levels: [Int32] = KVBlockPool.vectorLevel > 0 ? [0, KVBlockPool.vectorLevel] : [0]

    @Test("a block's contents are the defined words, little-endian, on every path")
    func contentsAsDefined() {
        for level in Self.levels {
            for (request, block, bytes) in [("r", 5, 4096), ("req-17", 0, 8), ("x", 123_456, 1000)] {
                var b = [UInt8](repeating: 0, count: bytes)
                KVBlockPool.fill(&b, request: request, block: block, level: level)
                let expected = (0..<(bytes / 8)).flatMap { i in withUnsafeBytes(of: Self.definedWord(request: request, block: block, index: i).littleEndian, Array.init) }
                #expect(Array(b[..<(bytes / 8 * 8)]) == expected, "level \(level), \(request) block \(block)")
            }
        }
    }

    @Test("the one-pass check accepts every slice of a block's contents at any offset and names the first wrong byte, on every path")
    func checkSlices() {
        let block = KVBlockPool.contents(request: "r", block: 5, bytes: 4096)
        var rng = SystemRandomNumberGenerator()
        for level in Self.levels {
          for _ in 0..<400 {
            let a = Int.random(in: 0..<4096, using: &rng), b = Int.random(in: a...4096, using: &rng)
            var slice = Array(block[a..<b])
            #expect(slice.withUnsafeBytes { KVBlockPool.firstMismatch($0, request: "r", block: 5, offset: a, level: level) } == nil, "\(a)..<\(b)")
            guard !slice.isEmpty else { continue }
            let k = Int.random(in: 0..<slice.count, using: &rng)
            slice[k] ^= 0x40
            #expect(slice.withUnsafeBytes { KVBlockPool.firstMismatch($0, request: "r", block: 5, offset: a, level: level) } == k, "\(a)..<\(b) flipped \(k)")
            if slice.count >= 8 { #expect(slice.withUnsafeBytes { KVBlockPool.firstMismatch($0, request: "r", block: 4, offset: a, level: level) } != nil, "another block's bytes") }
            // Checked while copied: the same answer, and only the bytes before the wrong one stored.
            var out = [UInt8](repeating: 0xEE, count: slice.count)
            let bad = slice.withUnsafeBytes { src in out.withUnsafeMutableBytes { KVBlockPool.copyChecked(src, into: $0.baseAddress!, request: "r", block: 5, offset: a, level: level) } }
            #expect(bad == k && Array(out[..<k]) == Array(block[a..<(a + k)]) && out[k...].allSatisfy { $0 == 0xEE }, "\(a)..<\(b) flipped \(k)")
            slice[k] ^= 0x40
            var whole = [UInt8](repeating: 0, count: slice.count)
            #expect(slice.withUnsafeBytes { src in whole.withUnsafeMutableBytes { KVBlockPool.copyChecked(src, into: $0.baseAddress!, request: "r", block: 5, offset: a, level: level) } } == nil && whole == slice)
          }
        }
    }

    @Test("blocks are real bytes that follow the engine's counts, scaled, and come back when a request goes")
    func followsCounts() {
        let pool = KVBlockPool(fullBlockBytes: 8 * 1_048_576, kvBytesScale: 1.0 / 4096)
        #expect(pool.blockBytes == 2048)
        pool.sync(["a": 3, "b": 1])
        #expect(pool.bytesHeld == 4 * 2048 && pool.counts == ["a": 3, "b": 1])
        pool.sync(["a": 5])
        #expect(pool.bytesHeld == 5 * 2048 && pool.counts == ["a": 5] && pool.peakBytesHeld == 5 * 2048)
        pool.sync([:])
        #expect(pool.bytesHeld == 0)
        // Contents depend on the request and the block, nothing else.
        #expect(KVBlockPool.contents(request: "a", block: 2, bytes: 64) == KVBlockPool.contents(request: "a", block: 2, bytes: 64))
        #expect(KVBlockPool.contents(request: "a", block: 2, bytes: 64) != KVBlockPool.contents(request: "a", block: 3, bytes: 64))
        #expect(KVBlockPool.contents(request: "a", block: 2, bytes: 64) != KVBlockPool.contents(request: "b", block: 2, bytes: 64))
    }

    @Test("a replica's blocks cross the data plane and the receiver verifies every byte; a wrong byte or order is named")
    func acrossTheDataPlane() throws {
        let source = KVBlockPool(fullBlockBytes: 8 * 1_048_576, kvBytesScale: 1.0 / 256)
        source.sync(["req-1": 40])
        let dest = KVBlockPool(fullBlockBytes: 8 * 1_048_576, kvBytesScale: 1.0 / 256)
        let receiver = try DataPlane(config: DataPlaneConfig(nodeID: "dst"))
        let sink = PoolSink(dest, request: "req-1")
        receiver.receiver = sink
        let sender = try DataPlane(config: DataPlaneConfig(nodeID: "src"))
        var outcome: Result<Int, DataPlaneError>?
        let total = 40 * source.blockBytes
        try sender.send(to: PeerAddress(endpoint: receiver.endpoint), kind: "kv", totalBytes: total, chunkBytes: 100_000,
                        source: { off, len, emit in try source.read("req-1", blocks: 0..<40, offset: off, length: len, into: emit) },
                        done: { outcome = $0 })
        let deadline = Date().addingTimeInterval(20)
        while (outcome == nil || sink.results.isEmpty) && Date() < deadline {
            _ = try ZMQPoller.readable(sender.sockets + receiver.sockets, timeoutMs: 5)
            try sender.pump(); try receiver.pump()
        }
        #expect(try outcome?.get() == total && sink.errors.isEmpty, "\(sink.errors)")
        #expect(dest.counts == ["req-1": 40] && dest.bytesHeld == total)
        // Corrupt bytes and a gap are refused by name.
        var bad = KVBlockPool.contents(request: "req-2", block: 0, bytes: 64)
        bad[17] ^= 1
        let check = KVBlockPool(fullBlockBytes: 64, kvBytesScale: 1)
        #expect(throws: KVBlockPool.PoolError.self) { try bad.withUnsafeBytes { try check.write("req-2", block: 0, offset: 0, bytes: $0) } }
        do { try bad.withUnsafeBytes { try check.write("req-2", block: 0, offset: 0, bytes: $0) } } catch { #expect("\(error)".contains("byte 17 is not its KV contents")) }
        #expect(check.counts["req-2"] == nil && check.bytesHeld == 0, "a block begun by a wrong chunk is given back")
        let good = KVBlockPool.contents(request: "req-2", block: 3, bytes: 64)
        do { try good.withUnsafeBytes { try check.write("req-2", block: 3, offset: 0, bytes: $0) }; Issue.record("a gap was accepted") } catch {
            #expect("\(error)".contains("block 3 of request req-2 arrived before block"))
        }
        #expect(throws: KVBlockPool.PoolError.self) { try source.read("req-1", blocks: 0..<41, offset: 0, length: 8, into: { _ in }) }
    }

    @Test("a replica started with gpu_memory_utilization has the KV blocks that share leaves; one out of range is refused, naming it")
    func replicaMemoryUtilization() throws {
        func blocks(_ u: Double) -> (Bool, String, Int?) {
            let replicas = EmulatedReplicas(kb: llamaA100KB)
            var s = StartReplica()
            s.replicaID = "r1"; s.serviceID = "s"; s.model = "Llama-2-7b"; s.gpuModel = "A100-80GB"; s.gpus = [0]; s.batch = 4; s.timeScale = 1
            s.gpuMemoryUtilization = u
            let r = replicas.start(s, nodeGPUModel: "A100-80GB", nodeGPUs: 1, busy: [], wallNanos: 0)
            return (r.ok, r.detail, replicas.loads(wallNanos: 0).first?.load.totalBlocks)
        }
        let arch = llamaA100.arch
        #expect(blocks(0).2 == Int((80 * 1_073_741_824 * 0.9 - arch.weightBytes) / (arch.kvBytesPerToken * 16)), "0: vLLM's default, 0.9")
        #expect(blocks(0.5).2 == Int((80 * 1_073_741_824 * 0.5 - arch.weightBytes) / (arch.kvBytesPerToken * 16)))
        let bad = blocks(1.5)
        #expect(!bad.0 && bad.1.contains("gpu_memory_utilization 1.5"), "\(bad.1)")
    }

    @Test("an emulated replica holds its engine's KV blocks as real bytes while requests run, and none once they are done")
    func replicaHoldsBytes() throws {
        let replicas = EmulatedReplicas(kb: llamaA100KB)
        var s = StartReplica()
        s.replicaID = "r1"; s.serviceID = "s"; s.model = "Llama-2-7b"; s.gpuModel = "A100-80GB"; s.gpus = [0]; s.batch = 4; s.timeScale = 1
        s.kvBytesScale = 1.0 / 4096
        #expect(replicas.start(s, nodeGPUModel: "A100-80GB", nodeGPUs: 1, busy: [], wallNanos: 0).ok)
        var q = InferenceRequest(); q.requestID = "q1"; q.serviceID = "s"; q.prefillTokens = 1000; q.decodeTokens = 100
        var sr = ServeRequests(); sr.replicaID = "r1"; sr.requests = [q]
        #expect(replicas.serve(sr, wallNanos: 0).ok)
        _ = replicas.results(wallNanos: 50_000_000)   // 50 ms in: prefilled, decoding
        #expect(replicas.kvBytesHeld.now == 63 * 2048, "⌈1000 / 16⌉ + the decode blocks so far, 2 KiB each: \(replicas.kvBytesHeld)")
        let done = replicas.results(wallNanos: 60_000_000_000)
        #expect(done.count == 1 && done[0].ttftSeconds > 0 && done[0].meanTbtSeconds > 0)
        #expect(replicas.kvBytesHeld.now == 0 && replicas.kvBytesHeld.peak >= 63 * 2048)
    }
}
