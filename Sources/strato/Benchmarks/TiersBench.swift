import Cluster
import DataPlane
import Features
import Foundation
import MemoryAgent
import Wire

/// `strato bench tiers`: the block store's tiers in one run, against this host's ceilings.
/// - in process: put and get bandwidth per tier (blocks of `blockBytes`) and the latency of one
///   4 KiB block; ceilings are memcpy of the same blocks (DRAM, CXL) and raw direct-I/O writes and
///   reads of the same blocks in one file (NVMe: the writes' ceiling is the file written over, the
///   disk's own bandwidth; its first write into the fresh file, which allocates, is shown beside);
/// - over the data plane: a client on its own data plane puts and gets DRAM blocks on a memory
///   host's handler (its own thread), against raw libzmq bulk with the same chunk size.
/// The raw disk and the NVMe tier, and raw libzmq and the data plane, run back to back in each of
/// `rounds` rounds: the figures are medians, and each round's own ratios are kept.
enum TiersBench {
    struct TierRow {
        var kind: TierKind
        var label: String
        var putGBps = 0.0, getGBps = 0.0
        var putLatencyUs = 0.0, getLatencyUs = 0.0
    }
    struct Figures {
        var blockBytes: Int
        var totalBytes: Int
        var rows: [TierRow] = []
        /// memcpy of the same blocks into buffers touched before (a put's least work in steady
        /// state), and out of them into one reused buffer (a get's: the reader copies out).
        var memcpyPutGBps = 0.0, memcpyGetGBps = 0.0
        var diskWriteGBps = 0.0, diskReadGBps = 0.0, diskDirect = true
        /// The raw disk's first write, into the fresh file (the filesystem allocates as it goes).
        var diskFreshWriteGBps = 0.0
        /// NVMe as a memory host runs it: written behind by the writer thread (a batch made durable by one syncfs), timed
        /// from the first put until every block is on disk (`flush`).
        var nvmeBehindPutGBps = 0.0
        var planePutGBps = 0.0, planeGetGBps = 0.0, rawZMQGBps = 0.0
        var dramProbe: TierProbe.Figures
        /// Each round's NVMe tier ÷ the raw disk measured just before it.
        var nvmeRounds: [NVMeRound] = []
        /// Each round's data plane ÷ the raw libzmq bulk measured just before it (put, get).
        var planeRounds: [(put: Double, get: Double)] = []
    }
    struct NVMeRound { var put: Double, get: Double, behind: Double }

    static func median(_ v: [Double]) -> Double { let s = v.sorted(); return s.isEmpty ? 0 : s[s.count / 2] }
    static func now() -> Int64 { SystemClock.shared.monotonicNanos() }

    /// Deterministic block contents: a function of the block's index.
    static func block(_ i: Int, _ n: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: n)
        b.withUnsafeMutableBytes { p in
            let w = p.bindMemory(to: UInt64.self)
            for j in 0..<w.count { w[j] = UInt64(i) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(j) }
        }
        return b
    }

    static func run(blockBytes: Int, totalBytes: Int, directory: String, rounds: Int = 3, progress: (String) -> Void) throws -> Figures {
        let count = max(4, totalBytes / blockBytes)
        let probe = TierProbe.probeDRAM()
        var f = Figures(blockBytes: blockBytes, totalBytes: count * blockBytes, dramProbe: probe)
        let blocks = (0..<count).map { block($0, blockBytes) }
        progress(String(format: "DRAM probe: %.2f GB/s memcpy, %.0f ns latency (%@)", probe.bandwidthGBps, probe.latencyNs, probe.method as NSString))

        // Ceilings in memory.
        (f.memcpyPutGBps, f.memcpyGetGBps) = memcpyCeilings(blocks)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        progress(String(format: "ceilings: memcpy into buffers touched before %.2f GB/s, out into one buffer %.2f GB/s", f.memcpyPutGBps, f.memcpyGetGBps))

        // DRAM and CXL, each alone, in process.
        for kind in [TierKind.dram, .cxl] {
            let backend: TierBackend = kind == .dram ? DRAMTier()
                : EmulatedCXLTier(dramBandwidthBytesPerSecond: probe.bandwidthGBps * 1e9, dramLatencySeconds: probe.latencyNs * 1e-9)
            let row = try measure(backend, kind: kind, blocks: blocks, total: f.totalBytes)
            f.rows.append(row)
            progress(String(format: "  %@: put %.2f GB/s, get %.2f GB/s; 4 KiB put %.1f µs, get %.1f µs", kind.rawValue as NSString,
                            row.putGBps, row.getGBps, row.putLatencyUs, row.getLatencyUs))
        }

        // NVMe against the raw disk, back to back in each round: a virtual disk's speed drifts
        // within a minute, so a ceiling measured once would judge the tier against another disk.
        var nvmeRows: [TierRow] = [], raws: [RawDisk] = [], behinds: [Double] = []
        for k in 0..<max(1, rounds) {
            let raw = try rawDisk(directory: directory, blocks: blocks)
            f.diskDirect = raw.direct
            raws.append(raw)
            let dir = directory + "/store-nvme"
            try? FileManager.default.removeItem(atPath: dir)
            let row = try measure(try FileTier(directory: dir), kind: .nvme, blocks: blocks, total: f.totalBytes)
            try? FileManager.default.removeItem(atPath: dir)
            nvmeRows.append(row)
            let behind = try writtenBehind(blocks: blocks, total: f.totalBytes, directory: directory + "/store-nvme-behind")
            behinds.append(behind)
            f.nvmeRounds.append(TiersBench.NVMeRound(put: row.putGBps / raw.write, get: row.getGBps / raw.read, behind: behind / raw.write))
            progress(String(format: "  nvme, round %d of %d: raw disk (%@) write %.2f GB/s (into the fresh file %.2f), read %.2f GB/s; tier put %.2f GB/s, get %.2f GB/s, written behind %.2f GB/s; 4 KiB put %.1f µs, get %.1f µs",
                            k + 1, max(1, rounds), (raw.direct ? "direct I/O" : "buffered: O_DIRECT refused") as NSString, raw.write, raw.freshWrite, raw.read, row.putGBps, row.getGBps, behind, row.putLatencyUs, row.getLatencyUs))
        }
        f.diskWriteGBps = median(raws.map(\.write)); f.diskReadGBps = median(raws.map(\.read)); f.diskFreshWriteGBps = median(raws.map(\.freshWrite))
        f.nvmeBehindPutGBps = median(behinds)
        var nvme = TierRow(kind: .nvme, label: nvmeRows[0].label)
        nvme.putGBps = median(nvmeRows.map(\.putGBps)); nvme.getGBps = median(nvmeRows.map(\.getGBps))
        nvme.putLatencyUs = median(nvmeRows.map(\.putLatencyUs)); nvme.getLatencyUs = median(nvmeRows.map(\.getLatencyUs))
        f.rows.append(nvme)

        // Over the data plane: DRAM tier on a host thread, the client here.
        // Raw libzmq then the data plane, back to back in each round, as for NVMe.
        var zmqs: [Double] = [], puts: [Double] = [], gets: [Double] = []
        for k in 0..<max(1, rounds) {
            let raw = (try? DataPlaneBench.rawZMQRate(total: f.totalBytes, chunk: min(blockBytes, 4 << 20))) ?? 0
            let (put, get) = try overDataPlane(blocks: blocks)
            zmqs.append(raw); puts.append(put); gets.append(get)
            if raw > 0 { f.planeRounds.append((put / raw, get / raw)) }
            progress(String(format: "  data plane, round %d of %d: raw libzmq %.2f GB/s; DRAM tier put %.2f GB/s, get %.2f GB/s", k + 1, max(1, rounds), raw, put, get))
        }
        f.rawZMQGBps = median(zmqs); f.planePutGBps = median(puts); f.planeGetGBps = median(gets)
        progress(String(format: "over the data plane: put %.2f GB/s, get %.2f GB/s; raw libzmq %.2f GB/s", f.planePutGBps, f.planeGetGBps, f.rawZMQGBps))
        return f
    }

    /// One tier alone in process: put and get bandwidth over the blocks, and one 4 KiB block's put
    /// and get latency (medians).
    static func measure(_ backend: TierBackend, kind: TierKind, blocks: [[UInt8]], total: Int) throws -> TierRow {
        let blockBytes = blocks[0].count, count = blocks.count
        let store = try TieredBlockStore(tiers: [(backend, total + (1 << 20))])
        var row = TierRow(kind: kind, label: backend.label)
        // A first pass, deleted, so the timed one runs on the tier's recycled memory (steady state).
        for (i, b) in blocks.enumerated() { try store.put("w/\(i)", b) }
        for i in blocks.indices { store.delete("w/\(i)") }
        var t0 = now()
        for (i, b) in blocks.enumerated() { try store.put("b/\(i)", b) }
        row.putGBps = Double(total) / Double(now() - t0)
        t0 = now()
        // The reader copies each block into its own buffer (as a GPU agent fills its KV blocks).
        var sink = [UInt8](repeating: 0, count: blockBytes)
        for i in 0..<count {
            let got = try store.get("b/\(i)", promote: false).bytes
            got.withUnsafeBytes { g in sink.withUnsafeMutableBytes { _ = memcpy($0.baseAddress!, g.baseAddress!, blockBytes) } }
        }
        row.getGBps = Double(total) / Double(now() - t0)
        precondition(sink == blocks[count - 1])
        // One 4 KiB block at a time.
        let small = block(7, 4096)
        var puts: [Double] = [], gets: [Double] = []
        for i in 0..<(kind == .nvme ? 50 : 500) {
            let a = now(); try store.put("s/\(i)", small); let b = now()
            _ = try store.get("s/\(i)", promote: false); let c = now()
            puts.append(Double(b - a) / 1e3); gets.append(Double(c - b) / 1e3)
        }
        row.putLatencyUs = median(puts); row.getLatencyUs = median(gets)
        return row
    }

    /// NVMe written behind, as on a memory host: puts return once queued; the clock stops when
    /// the writer has every block on disk. GB/s.
    static func writtenBehind(blocks: [[UInt8]], total: Int, directory dir: String) throws -> Double {
        try? FileManager.default.removeItem(atPath: dir)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tier = try FileTier(directory: dir)
        tier.enableWriteBehind(maxQueuedBytes: total + (1 << 20))
        let store = try TieredBlockStore(tiers: [(tier, total + (1 << 20))])
        for (i, b) in blocks.enumerated() { try store.put("w/\(i)", b) }
        tier.flush()
        for i in blocks.indices { store.delete("w/\(i)") }
        tier.flush()
        let t0 = now()
        for (i, b) in blocks.enumerated() { try store.put("b/\(i)", b) }
        tier.flush()
        let rate = Double(total) / Double(now() - t0)
        precondition(tier.writeBehindFailures == 0, "the writer failed \(tier.writeBehindFailures) blocks")
        let last = try store.get("b/\(blocks.count - 1)", promote: false).bytes
        precondition(last == blocks[blocks.count - 1])
        return rate
    }

    /// memcpy of the blocks into buffers allocated and touched once before (a put's least work in
    /// steady state), and out of them into one reused buffer (a get's: the reader copies out).
    static func memcpyCeilings(_ blocks: [[UInt8]]) -> (Double, Double) {
        let n = blocks[0].count
        var copies = blocks.map { _ in [UInt8](repeating: 0, count: n) }
        var puts: [Double] = [], gets: [Double] = []
        for _ in 0..<3 {
            var t0 = now()
            for i in blocks.indices { blocks[i].withUnsafeBytes { s in copies[i].withUnsafeMutableBytes { _ = memcpy($0.baseAddress!, s.baseAddress!, n) } } }
            puts.append(Double(blocks.count * n) / Double(now() - t0))
            var sink = [UInt8](repeating: 0, count: n)
            t0 = now()
            for c in copies { c.withUnsafeBytes { g in sink.withUnsafeMutableBytes { _ = memcpy($0.baseAddress!, g.baseAddress!, n) } } }
            gets.append(Double(blocks.count * n) / Double(now() - t0))
            precondition(sink == blocks[blocks.count - 1])
        }
        return (median(puts), median(gets))
    }

    struct RawDisk { var freshWrite: Double, write: Double, read: Double, direct: Bool }

    /// Sequential writes of the blocks into one fresh file (direct I/O where allowed), one fsync
    /// at the end; the same writes again over it (no allocation left: the disk's own bandwidth for
    /// these block sizes), then reads. GB/s.
    static func rawDisk(directory: String, blocks: [[UInt8]]) throws -> RawDisk {
        let file = directory + "/raw-\(getpid())"
        defer { unlink(file) }
        let n = blocks[0].count
        let size = (n + 4095) / 4096 * 4096
        var p: UnsafeMutableRawPointer?
        posix_memalign(&p, 4096, size)
        defer { free(p) }
        var direct = true
        var fd = open(file, O_CREAT | O_RDWR | O_TRUNC | FileTier.oDirect, 0o600)
        if fd < 0 { direct = false; fd = open(file, O_CREAT | O_RDWR | O_TRUNC, 0o600) }
        guard fd >= 0 else { throw BlockStoreError(.tierUnavailable, "cannot open \(file): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        func writeAll() throws -> Double {
            let t0 = now()
            for (i, b) in blocks.enumerated() {
                b.withUnsafeBytes { _ = memcpy(p!, $0.baseAddress!, n) }
                guard pwrite(fd, p!, size, off_t(i * size)) == size else { throw BlockStoreError(.io, "raw write: \(String(cString: strerror(errno)))") }
            }
            fsync(fd)
            return Double(blocks.count * n) / Double(now() - t0)
        }
        let fresh = try writeAll()
        let w = try writeAll()
        let t0 = now()
        for i in 0..<blocks.count {
            guard pread(fd, p!, size, off_t(i * size)) == size else { throw BlockStoreError(.io, "raw read: \(String(cString: strerror(errno)))") }
        }
        let r = Double(blocks.count * n) / Double(now() - t0)
        return RawDisk(freshWrite: fresh, write: w, read: r, direct: direct)
    }

    /// A memory host (DRAM tier, its handler and data plane on a thread of its own) and a client:
    /// every block put, then every block got back and checked; 16 blocks per transfer, 4 transfers in flight.
    static func overDataPlane(blocks: [[UInt8]]) throws -> (Double, Double) {
        let total = blocks.reduce(0) { $0 + $1.count }
        let ready = DispatchSemaphore(value: 0), exited = DispatchSemaphore(value: 0)
        let stop = ManagedAtomicFlag()
        nonisolated(unsafe) var endpoint = ""
        nonisolated(unsafe) var hostError: Error?
        let host = Thread {
            do {
                var c = DataPlaneConfig(nodeID: "bench-memory-host")
                c.chunkBytes = min(blocks[0].count, 4 << 20)
                let plane = try DataPlane(config: c)
                let dram = DRAMTier()
                dram.preallocate(count: blocks.count, bytes: blocks[0].count)   // as a serving stack allocates its CPU cache at start
                let store = try TieredBlockStore(tiers: [(dram, total + (1 << 20))])
                let handler = TierStoreHandler(store: store, plane: plane)
                endpoint = plane.endpoint
                ready.signal()
                while !stop.isSet {
                    _ = try ZMQPoller.readable(plane.sockets, timeoutMs: 1)
                    try plane.pump()
                    handler.pump(wallNanos: 0)
                }
                plane.close()
            } catch { hostError = error; ready.signal() }
            exited.signal()
        }
        host.start()
        ready.wait()
        defer { stop.set(); exited.wait() }
        if let e = hostError { throw e }
        var c = DataPlaneConfig(nodeID: "bench-gpu")
        c.chunkBytes = min(blocks[0].count, 4 << 20)
        let plane = try DataPlane(config: c)
        defer { plane.close() }
        let client = TierClient(plane: plane)
        let peer = PeerAddress(endpoint: endpoint)
        let batch = 16, depth = 4
        var failure: Error?
        var outstanding = 0
        func drive(until done: () -> Bool) throws {
            let deadline = now() + 120_000_000_000
            while !done() && failure == nil && now() < deadline {
                _ = try ZMQPoller.readable(plane.sockets, timeoutMs: 1)
                try plane.pump()
                client.expire()
            }
            if let failure { throw failure }
            guard done() else { throw BlockStoreError(.io, "the benchmark's transfers did not finish in 120 s") }
        }
        // Puts: two batches in flight at once.
        var t0 = now()
        var next = 0
        while next < blocks.count || outstanding > 0 {
            while outstanding < depth && next < blocks.count {
                let range = next..<min(next + batch, blocks.count)
                try client.put(range.map { (key: "b/\($0)", bytes: blocks[$0]) }, to: peer) { r in
                    outstanding -= 1
                    if case .failure(let e) = r { failure = e }
                }
                outstanding += 1; next = range.upperBound
            }
            let more = next < blocks.count
            try drive { more ? outstanding < depth : outstanding == 0 }
        }
        let put = Double(total) / Double(now() - t0)
        t0 = now()
        next = 0
        // Every byte compared with what was put, as it arrives (a reader's one pass over it).
        var checked = 0, mismatched = 0
        while next < blocks.count || outstanding > 0 {
            while outstanding < depth && next < blocks.count {
                let range = next..<min(next + batch, blocks.count)
                try client.get(range.map { "b/\($0)" }, from: peer, into: { j, offset, bytes in
                    let same = blocks[range.lowerBound + j].withUnsafeBytes { memcmp($0.baseAddress! + offset, bytes.baseAddress!, bytes.count) == 0 }
                    if !same { mismatched += 1 }
                }) { r in
                    outstanding -= 1
                    switch r {
                    case .failure(let e): failure = e
                    case .success(let f): checked += f.header.blocks.count
                    }
                }
                outstanding += 1; next = range.upperBound
            }
            let more = next < blocks.count
            try drive { more ? outstanding < depth : outstanding == 0 }
        }
        let get = Double(total) / Double(now() - t0)
        if mismatched > 0 { throw BlockStoreError(.corrupt, "\(mismatched) chunks came back different") }
        guard checked == blocks.count else { throw BlockStoreError(.corrupt, "\(blocks.count - checked) blocks came back different") }
        return (put, get)
    }
}

/// A flag one thread sets and another reads (the benchmark's stop signal).
final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}
