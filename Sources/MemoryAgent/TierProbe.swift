import Foundation
import Scheduling
import Protocol

/// Measures this host's memory tiers so a memory agent registers real figures.
///
/// - DRAM: bandwidth from timed copies of a 64 MiB buffer; latency from a dependent pointer chase
///   over a random cycle (defeats prefetching), both on this host.
/// - NVMe: sequential write+fsync and read of a file in the tier's directory; latency from 4 KiB
///   random reads. (On a host without NVMe this measures whatever backs the directory, and says so.)
/// - CXL: no CXL device exists here, so the tier is *emulated*: the measured DRAM figures scaled by
///   the published CXL/DRAM ratios (D2.1, CLOUDSTARS: latency +154.3%, bandwidth 51/70 GiB/s).
public enum TierProbe {
    public static let cxlLatencyFactor = 2.543
    public static let cxlBandwidthFactor = 51.0 / 70.0

    public struct Figures: Sendable {
        public var bandwidthGBps: Double
        public var latencyNs: Double
        public var method: String
    }

    public static func probeDRAM(bytes: Int = 64 << 20) -> Figures {
        let count = bytes / 8
        var src = [UInt64](repeating: 1, count: count)
        var dst = [UInt64](repeating: 0, count: count)
        var best = Double.infinity
        for _ in 0..<3 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            src.withUnsafeBytes { s in dst.withUnsafeMutableBytes { d in _ = memcpy(d.baseAddress!, s.baseAddress!, bytes) } }
            let t1 = DispatchTime.now().uptimeNanoseconds
            best = min(best, Double(t1 - t0))
        }
        // A copy reads and writes every byte.
        let bandwidth = Double(2 * bytes) / best
        src[0] = dst[1]

        // Pointer chase over a random cyclic permutation of cache-line-sized slots.
        let slots = bytes / 64
        var order = Array(0..<slots)
        var rng = SplitMix64(seed: 0x5EED)
        for i in stride(from: slots - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        var next = [Int32](repeating: 0, count: slots * 16)
        for k in 0..<slots { next[order[k] * 16] = Int32(order[(k + 1) % slots] * 16) }
        let steps = 2_000_000
        var p = 0
        let t0 = DispatchTime.now().uptimeNanoseconds
        next.withUnsafeBufferPointer { b in for _ in 0..<steps { p = Int(b[p]) } }
        let t1 = DispatchTime.now().uptimeNanoseconds
        // The chase's end is used, so the optimiser cannot drop the loop.
        if p < 0 { print("pointer chase ended at \(p)") }
        let latency = Double(t1 - t0) / Double(steps)
        return Figures(bandwidthGBps: bandwidth, latencyNs: latency,
                       method: "probe: memcpy of \(bytes >> 20) MiB (best of 3); pointer chase over \(bytes >> 20) MiB")
    }

    public static func emulateCXL(from dram: Figures) -> Figures {
        Figures(bandwidthGBps: dram.bandwidthGBps * cxlBandwidthFactor, latencyNs: dram.latencyNs * cxlLatencyFactor,
                method: "emulated: measured DRAM × published CXL ratios (latency ×\(cxlLatencyFactor), bandwidth ×51/70; D2.1)")
    }

    public static func probeDirectory(_ path: String, bytes: Int = 32 << 20) throws -> Figures {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let file = path + "/.strato-probe-\(getpid())"
        defer { unlink(file) }
        let fd = open(file, O_CREAT | O_RDWR | O_TRUNC, 0o600)
        guard fd >= 0 else { throw ProbeError.cannotOpen(file, String(cString: strerror(errno))) }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0xA5, count: 1 << 20)
        let w0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<(bytes >> 20) {
            let n = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n == chunk.count else { throw ProbeError.io(file, "short write") }
        }
        fsync(fd)
        let w1 = DispatchTime.now().uptimeNanoseconds
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        lseek(fd, 0, SEEK_SET)
        let r0 = DispatchTime.now().uptimeNanoseconds
        while buffer.withUnsafeMutableBytes({ read(fd, $0.baseAddress, $0.count) }) > 0 {}
        let r1 = DispatchTime.now().uptimeNanoseconds
        var rng = SplitMix64(seed: 42)
        let reads = 256
        let l0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<reads {
            let offset = off_t(rng.next() % UInt64(bytes / 4096)) * 4096
            _ = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 4096, offset) }
        }
        let l1 = DispatchTime.now().uptimeNanoseconds
        let writeBW = Double(bytes) / Double(w1 - w0)
        let readBW = Double(bytes) / Double(max(1, r1 - r0))
        return Figures(bandwidthGBps: min(writeBW, readBW), latencyNs: Double(l1 - l0) / Double(reads),
                       method: "probe: \(bytes >> 20) MiB write+fsync and read in \(path) (min of both); 4 KiB random reads (page cache may serve them)")
    }

    public enum ProbeError: Error, CustomStringConvertible {
        case cannotOpen(String, String), io(String, String)
        public var description: String {
            switch self {
            case let .cannotOpen(f, why): return "cannot open \(f): \(why)"
            case let .io(f, why): return "I/O error on \(f): \(why)"
            }
        }
    }
}
