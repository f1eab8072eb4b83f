import CChecksum
import Foundation

/// The KV blocks an emulated replica holds, as real memory: one buffer per block of each request
/// its engine holds, sized from the model's bytes per token × the block's tokens × `kvBytesScale`
/// (emulation: no GPU, and the real sizes would not fit this machine; every output states the
/// scale). A block's contents are a deterministic function of (request, token position), so a
/// replica that receives blocks (a migration's destination) verifies every byte.
///
/// Owned by the agent's loop thread, like the engine whose block counts it follows.
public final class KVBlockPool {
    public let blockBytes: Int
    public let kvBytesScale: Double
    private var blocks: [String: [[UInt8]]] = [:]
    public private(set) var bytesHeld = 0
    public private(set) var peakBytesHeld = 0
    /// Buffers of blocks given back or set aside in advance, reused for new ones (up to
    /// `spareBytes`): a block of a few MiB is its own mapping, and mapping, faulting in and
    /// zeroing fresh pages for every block costs more than the copy and the check together. A
    /// serving engine allocates its KV cache when it starts for the same reason (vLLM's
    /// gpu_memory_utilization); `preallocate` does so here.
    private var spare: [[UInt8]] = []
    public var spareBytes = 256 << 20

    /// Sets aside `blocks` block buffers now, their pages touched, so serving faults in nothing.
    public func preallocate(_ blocks: Int) {
        spareBytes = max(spareBytes, (spare.count + blocks) * blockBytes)
        for _ in 0..<max(0, blocks) {
            spare.append([UInt8](unsafeUninitializedCapacity: blockBytes) { b, n in
                _ = memset(b.baseAddress!, 0xA5, blockBytes)
                n = blockBytes
            })
        }
    }

    /// Bytes set aside for blocks to come.
    public var spareHeld: Int { spare.count * blockBytes }

    /// `fullBlockBytes`: a block's real size (bytes per token × block tokens ÷ tensor parallel).
    public init(fullBlockBytes: Double, kvBytesScale: Double) {
        self.kvBytesScale = kvBytesScale
        // Whole 8-byte words, at least one.
        self.blockBytes = max(8, Int(fullBlockBytes * kvBytesScale) / 8 * 8)
    }

    /// Blocks held per request.
    public var counts: [String: Int] { blocks.mapValues(\.count) }

    /// Makes each request hold exactly `counts[request]` blocks: new blocks are filled with their
    /// contents, a request no longer listed gives its blocks back.
    public func sync(_ counts: [String: Int]) {
        for id in blocks.keys where counts[id] == nil { drop(id) }
        for (id, n) in counts {
            var held = blocks[id] ?? []
            if held.count == n { continue }
            blocks[id] = nil   // held alone: appending does not copy the array of blocks
            while held.count > n { giveBack(held.removeLast()) }
            while held.count < n {
                var b = newBlock()
                KVBlockPool.fill(&b, request: id, block: held.count)
                held.append(b)
            }
            blocks[id] = held
        }
        peakBytesHeld = max(peakBytesHeld, bytesHeld)
    }

    public func drop(_ id: String) {
        for b in blocks.removeValue(forKey: id) ?? [] { giveBack(b) }
    }

    /// A block's buffer, its bytes whatever they were: the caller writes all of them.
    private func newBlock() -> [UInt8] {
        bytesHeld += blockBytes
        if let b = spare.popLast() { return b }
        return [UInt8](unsafeUninitializedCapacity: blockBytes) { _, n in n = blockBytes }
    }

    private func giveBack(_ b: [UInt8]) {
        bytesHeld -= b.count
        if (spare.count + 1) * blockBytes <= spareBytes { spare.append(b) }
    }

    /// `length` bytes at `offset` of blocks `range` of a request, in order, as one buffer (a data
    /// plane chunk; a chunk within one block is not copied).
    public func read(_ id: String, blocks range: Range<Int>, offset: Int, length: Int, into emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard let held = blocks[id], range.upperBound <= held.count else {
            throw PoolError("request \(id) holds \(blocks[id]?.count ?? 0) blocks, not blocks \(range)")
        }
        guard offset >= 0, length >= 0, offset + length <= range.count * blockBytes else {
            throw PoolError("bytes \(offset)..<\(offset + length) lie outside blocks \(range) of request \(id)")
        }
        let first = range.lowerBound + offset / blockBytes, within = offset % blockBytes
        if within + length <= blockBytes {
            try held[first].withUnsafeBytes { try emit(UnsafeRawBufferPointer(rebasing: $0[within..<(within + length)])) }
            return
        }
        var out = [UInt8](); out.reserveCapacity(length)
        var at = offset, left = length
        while left > 0 {
            let b = range.lowerBound + at / blockBytes, w = at % blockBytes
            let n = min(left, blockBytes - w)
            out += held[b][w..<(w + n)]
            at += n; left -= n
        }
        try out.withUnsafeBytes { try emit($0) }
    }

    /// Stores received bytes of block `block` of a request at `offset` within it after checking
    /// them against the contents that block must have; the error names the first wrong byte.
    public func write(_ id: String, block: Int, offset: Int, bytes: UnsafeRawBufferPointer) throws {
        let count = blocks[id]?.count ?? 0
        guard block <= count else { throw PoolError("block \(block) of request \(id) arrived before block \(count)") }
        guard offset + bytes.count <= blockBytes else { throw PoolError("bytes \(offset)..<\(offset + bytes.count) overrun a \(blockBytes)-byte block") }
        let fresh = block == count
        if fresh { let b = newBlock(); blocks[id, default: []].append(b) }
        // Checked and stored in one pass, in place (a copy of the dictionary's block would copy
        // the whole block on every chunk). Only bytes that matched are stored, so a wrong byte
        // leaves nothing wrong behind, and a block begun by this chunk is given back.
        let bad = blocks[id]![block].withUnsafeMutableBytes { dst in
            KVBlockPool.copyChecked(bytes, into: dst.baseAddress!.advanced(by: offset), request: id, block: block, offset: offset)
        }
        if let bad {
            if fresh { giveBack(blocks[id]!.removeLast()); if blocks[id]!.isEmpty { blocks[id] = nil } }
            throw PoolError("block \(block) of request \(id): byte \(offset + bad) is not its KV contents")
        }
        peakBytesHeld = max(peakBytesHeld, bytesHeld)
    }

    // MARK: contents

    static func seed(_ request: String) -> UInt64 {
        request.utf8.reduce(0xCBF2_9CE4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 }   // FNV-1a
    }

    public static func contents(request: String, block: Int, bytes: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: bytes)
        fill(&out, request: request, block: block)
        return out
    }

    /// Writes a block's contents over `buffer` (whole words: 64-bit words from the request's hash
    /// and the block's token position, made in `CChecksum`'s kvcontents.c, which also checks them).
    static func fill(_ buffer: inout [UInt8], request: String, block: Int, level: Int32 = vectorLevel) {
        let s = seed(request)
        buffer.withUnsafeMutableBytes { raw in strato_kv_fill_at(level, raw.baseAddress, raw.count / 8, s, UInt64(block)) }
    }

    /// 1 when the contents are made and checked with AVX2, 0 for the scalar loop (tests run both).
    static let vectorLevel = strato_kv_level()

    /// The index of the first byte of `bytes` (at `offset` in the block) that differs from the
    /// block's contents, or nil. One pass, no buffer: the expected words are made as the bytes are
    /// read, four at a time with AVX2 where the CPU has it.
    static func firstMismatch(_ bytes: UnsafeRawBufferPointer, request: String, block: Int, offset: Int, level: Int32 = vectorLevel) -> Int? {
        check(bytes, into: nil, request: request, block: block, offset: offset, level: level)
    }

    /// Copies `bytes` (at `offset` in the block) to `destination`, each piece checked against the
    /// block's contents as it is stored, so the arriving bytes are read once (checked in a pass of
    /// their own and then copied, they were read twice, and the scalar check alone ran at half
    /// memcpy's speed). Stops at the first wrong byte, which it does not store, and returns its
    /// index; nil when all of them matched and were stored.
    static func copyChecked(_ bytes: UnsafeRawBufferPointer, into destination: UnsafeMutableRawPointer, request: String, block: Int, offset: Int,
                            level: Int32 = vectorLevel) -> Int? {
        check(bytes, into: destination, request: request, block: block, offset: offset, level: level)
    }

    private static func check(_ bytes: UnsafeRawBufferPointer, into destination: UnsafeMutableRawPointer?, request: String, block: Int, offset: Int, level: Int32) -> Int? {
        guard !bytes.isEmpty else { return nil }
        let bad = strato_kv_check_at(level, bytes.baseAddress, bytes.count, destination, seed(request), UInt64(block), UInt64(offset))
        return bad < 0 ? nil : bad
    }

    public struct PoolError: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }
}
