#if canImport(Glibc)
import Glibc
#endif

/// Fixes glibc's malloc thresholds for a process that moves bulk data, once, when its first data
/// plane opens.
///
/// libzmq allocates a buffer for every large message it receives (a 1 MiB chunk is one). By
/// default glibc serves such sizes with mmap at first and adapts its thresholds as they are
/// freed: memory freed at the top of a heap is given back to the kernel past 2 × the mmap
/// threshold, so the next chunk faults in and zeroes fresh pages again. `perf` showed page faults
/// under the receive path's copy, and `strato bench dataplane --chunk-kib 1024 --repeats 15` on
/// this 2-core box ran at 0.95–1.05 GB/s for 4 MiB transfers and 1.47–2.19 GB/s for 256 MiB ones
/// with the defaults, 1.39–1.96 and 3.01–3.15 GB/s with thresholds like these (set then through
/// GLIBC_TUNABLES, before this existed). The price: a process keeps up to 64 MiB of freed heap
/// rather than returning it at once.
public enum AllocatorTuning {
    /// Buffers under this come from the heap (32 MiB: glibc's own ceiling for its adaptive value).
    static let mmapThreshold: Int32 = 32 << 20
    /// Free memory at a heap's top kept rather than returned to the kernel.
    static let trimThreshold: Int32 = 64 << 20

    /// Whether glibc took both settings (false where there is no glibc, or it refused).
    public static let applied: Bool = {
        #if canImport(Glibc)
        // An explicit value turns glibc's adaptive thresholds off; an operator's own
        // GLIBC_TUNABLES for malloc wins.
        if let t = getenv("GLIBC_TUNABLES"), String(cString: t).contains("glibc.malloc.") { return false }
        // <malloc.h> is not in Swift's Glibc module: mallopt is looked up, with its parameters'
        // values from that header (M_TRIM_THRESHOLD -1, M_MMAP_THRESHOLD -3).
        typealias MallOpt = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return false }
        let mallopt = unsafeBitCast(symbol, to: MallOpt.self)
        return mallopt(-3, mmapThreshold) == 1 && mallopt(-1, trimThreshold) == 1
        #else
        return false
        #endif
    }()
}
