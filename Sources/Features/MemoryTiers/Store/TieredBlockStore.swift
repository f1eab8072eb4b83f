import DataPlane
import Foundation

/// Which block a full tier gives up first. Told of every use; pluggable.
public protocol EvictionPolicy {
    var name: String { get }
    /// `key` was stored in or read from `tier`.
    mutating func touched(_ key: String, tier: Int)
    /// `key` left `tier`.
    mutating func removed(_ key: String, tier: Int)
    /// The next block to leave `tier`, or nil when it holds none.
    mutating func victim(tier: Int) -> String?
}

/// Least recently used: a queue per tier of (key, use number), stale entries skipped lazily, so
/// every operation is O(1) amortised.
public struct LRUEviction: EvictionPolicy {
    public var name: String { reorderOnUse ? "lru" : "fifo" }
    /// false: first in, first out (uses do not refresh a block).
    let reorderOnUse: Bool
    private var queues: [[(key: String, tick: UInt64)]] = []
    private var heads: [Int] = []
    private var current: [String: (tier: Int, tick: UInt64)] = [:]
    private var tick: UInt64 = 0
    public init(reorderOnUse: Bool = true) { self.reorderOnUse = reorderOnUse }

    public mutating func touched(_ key: String, tier: Int) {
        if !reorderOnUse, let c = current[key], c.tier == tier { return }
        while queues.count <= tier { queues.append([]); heads.append(0) }
        tick += 1
        current[key] = (tier, tick)
        queues[tier].append((key, tick))
    }

    public mutating func removed(_ key: String, tier: Int) {
        if current[key]?.tier == tier { current[key] = nil }
    }

    public mutating func victim(tier: Int) -> String? {
        guard tier < queues.count else { return nil }
        while heads[tier] < queues[tier].count {
            let e = queues[tier][heads[tier]]
            if let c = current[e.key], c.tier == tier, c.tick == e.tick { return e.key }
            heads[tier] += 1
            // Drop the consumed prefix now and then so the queue does not grow without bound.
            if heads[tier] > 1024 && heads[tier] * 2 > queues[tier].count {
                queues[tier].removeFirst(heads[tier]); heads[tier] = 0
            }
        }
        return nil
    }
}

/// A memory host's block store: blocks keyed by content (a chained prefix hash per KV chunk, or
/// a weight shard's model and layer) over a hierarchy of tiers, fastest first. A put lands in the
/// fastest tier with room for it; a full tier demotes its eviction victims one tier down, moving
/// their bytes (DRAM → CXL → NVMe → dropped); a hit below the top is promoted to the top. Capacity
/// is enforced per tier in payload bytes. Counters per tier and per error code are its telemetry.
///
/// Not thread-safe: one owner (the memory host's handler, or a benchmark) calls it.
public final class TieredBlockStore {
    public struct Counters: Sendable, Equatable {
        public var puts = 0, hits = 0, evictions = 0, demotions = 0, promotions = 0, dropped = 0
        public var bytesWritten = 0, bytesRead = 0
        /// Seconds spent in the tier's copies, and the emulated tiers' added throttle.
        public var seconds = 0.0, throttleSeconds = 0.0
    }

    public struct TierState {
        public let backend: TierBackend
        public let capacity: Int
        public internal(set) var used = 0
        public internal(set) var blocks = 0
        public internal(set) var counters = Counters()
        public var kind: TierKind { backend.kind }
    }

    struct Entry { var tier: Int; var size: Int }

    public private(set) var tiers: [TierState]
    private var index: [String: Entry] = [:]
    private var policy: EvictionPolicy
    public private(set) var misses = 0
    public private(set) var errors: [BlockStoreError.Code: Int] = [:]
    /// Holds an emulated tier's access for the seconds its throttle adds (a real wait by default;
    /// tests and the handler pass their own).
    public var pace: (Double) -> Void = TieredBlockStore.spinWait
    public static let maxKeyBytes = 512

    /// `tiers` fastest first (at most one of each kind); NVMe contents from an earlier run are
    /// indexed again (oldest first, evicted if they no longer fit).
    public init(tiers: [(TierBackend, capacity: Int)], policy: EvictionPolicy = LRUEviction()) throws {
        guard !tiers.isEmpty else { throw BlockStoreError(.tierUnavailable, "a block store needs at least one tier") }
        let kinds = tiers.map(\.0.kind)
        guard kinds == kinds.sorted(), Set(kinds).count == kinds.count else {
            throw BlockStoreError(.tierUnavailable, "tiers must be fastest first with one of each kind, got \(kinds.map(\.rawValue).joined(separator: ", "))")
        }
        for (b, cap) in tiers where cap <= 0 { throw BlockStoreError(.tierUnavailable, "tier \(b.kind.rawValue) has capacity \(cap) bytes") }
        self.tiers = tiers.map { TierState(backend: $0.0, capacity: $0.capacity) }
        self.policy = policy
        for t in self.tiers.indices {
            for (key, size) in self.tiers[t].backend.recovered() {
                guard size <= self.tiers[t].capacity else { self.tiers[t].backend.remove(key); continue }
                while self.tiers[t].used + size > self.tiers[t].capacity, let v = self.policy.victim(tier: t) { forget(v, tier: t); self.tiers[t].counters.dropped += 1 }
                index[key] = Entry(tier: t, size: size)
                self.tiers[t].used += size; self.tiers[t].blocks += 1
                self.policy.touched(key, tier: t)
            }
        }
    }

    public var policyName: String { policy.name }
    public var count: Int { index.count }
    /// Every key held, in any tier.
    public var keys: [String] { Array(index.keys) }

    /// The tier holding `key`, if any.
    public func tier(of key: String) -> TierKind? { index[key].map { tiers[$0.tier].kind } }
    public func size(of key: String) -> Int? { index[key]?.size }

    /// How many of `keys` (a request's chained prefix hashes, in order) are held from the start:
    /// each key names its whole prefix, so the first missing one ends the cached prefix.
    public func longestPrefix(_ keys: [String]) -> Int {
        var n = 0
        while n < keys.count, index[keys[n]] != nil { n += 1 }
        return n
    }

    private func fail(_ e: BlockStoreError) -> BlockStoreError { errors[e.code, default: 0] += 1; return e }

    /// Stores a block in the fastest tier that can hold it (or in `tier` and below). Replaces what
    /// was under the key. Returns the tier it went to.
    @discardableResult
    public func put(_ key: String, _ bytes: [UInt8], tier first: TierKind? = nil) throws -> TierKind {
        try bytes.withUnsafeBytes { try put(key, $0, tier: first) }
    }

    @discardableResult
    public func put(_ key: String, _ bytes: UnsafeRawBufferPointer, tier first: TierKind? = nil) throws -> TierKind {
        let t = try target(key, bytes.count, first)
        if let old = index[key] { forget(key, tier: old.tier) }
        do {
            try place(key, bytes, tier: t)
        } catch let e as BlockStoreError {
            throw fail(e)
        }
        tiers[t].counters.puts += 1
        return tiers[t].kind
    }

    /// A buffer to fill with a block that will be put with `put(_:owned:)`: recycled memory of
    /// the fastest tier when it is in memory (no fresh pages), else a new one.
    public func buffer(_ count: Int) -> [UInt8] {
        (tiers[0].backend as? MemoryTierBackend)?.buffer(count) ?? [UInt8](repeating: 0, count: count)
    }

    /// Stores a block filled in `buffer(_:)`: a memory tier keeps the buffer as it is (the copy
    /// into it was the put's one copy); other tiers write it.
    @discardableResult
    public func put(_ key: String, owned bytes: [UInt8], tier first: TierKind? = nil) throws -> TierKind {
        let t = try target(key, bytes.count, first)
        guard let memory = tiers[t].backend as? MemoryTierBackend else { return try bytes.withUnsafeBytes { try put(key, $0, tier: first) } }
        if let old = index[key] { forget(key, tier: old.tier) }
        do { try makeRoom(bytes.count, tier: t) } catch let e as BlockStoreError { throw fail(e) }
        let t0 = DispatchTime.now().uptimeNanoseconds
        memory.adopt(key, bytes)
        // The copy into the buffer happened outside: an emulated tier is charged what it would take in DRAM.
        account(t, bytes: bytes.count, since: t0, written: true, copied: (memory as? EmulatedCXLTier)?.dramSeconds(bytes.count) ?? 0)
        index[key] = Entry(tier: t, size: bytes.count)
        tiers[t].used += bytes.count; tiers[t].blocks += 1
        policy.touched(key, tier: t)
        tiers[t].counters.puts += 1
        return tiers[t].kind
    }

    /// The fastest tier (from `first` down) a block of `count` bytes fits in.
    private func target(_ key: String, _ count: Int, _ first: TierKind?) throws -> Int {
        guard !key.isEmpty, key.utf8.count <= Self.maxKeyBytes else { throw fail(BlockStoreError(.badKey, "a key must have 1 to \(Self.maxKeyBytes) bytes (got \(key.utf8.count))")) }
        let start = first.flatMap { k in tiers.firstIndex { $0.kind >= k } } ?? 0
        guard let t = tiers.indices.dropFirst(start).first(where: { tiers[$0].capacity >= count }) else {
            throw fail(BlockStoreError(.tooLarge, "block '\(key)' of \(count) bytes is larger than every tier from \(tiers[min(start, tiers.count - 1)].kind.rawValue) down"))
        }
        return t
    }

    /// Writes into tier `t` after making room there (demoting its victims).
    private func place(_ key: String, _ bytes: UnsafeRawBufferPointer, tier t: Int) throws {
        try makeRoom(bytes.count, tier: t)
        let t0 = DispatchTime.now().uptimeNanoseconds
        try tiers[t].backend.write(key, bytes)
        account(t, bytes: bytes.count, since: t0, written: true)
        index[key] = Entry(tier: t, size: bytes.count)
        tiers[t].used += bytes.count; tiers[t].blocks += 1
        policy.touched(key, tier: t)
    }

    private func account(_ t: Int, bytes: Int, since t0: UInt64, written: Bool, copied: Double = 0) {
        account(t, bytes: bytes, seconds: Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 + copied, written: written)
    }

    private func account(_ t: Int, bytes: Int, seconds real: Double, written: Bool) {
        let extra = tiers[t].backend.emulatedDelay(bytes: bytes, realSeconds: real)
        if extra > 0 { pace(extra) }
        tiers[t].counters.seconds += real + extra
        tiers[t].counters.throttleSeconds += extra
        if written { tiers[t].counters.bytesWritten += bytes } else { tiers[t].counters.bytesRead += bytes }
    }

    /// Frees `bytes` in tier `t`: its victims go one tier down (moving their bytes), or are
    /// dropped from the last tier. A victim the tier below cannot take is dropped.
    private func makeRoom(_ bytes: Int, tier t: Int) throws {
        while tiers[t].used + bytes > tiers[t].capacity {
            guard let v = policy.victim(tier: t), let e = index[v] else {
                throw BlockStoreError(.overCapacity, "tier \(tiers[t].kind.rawValue) cannot free \(bytes) bytes: \(tiers[t].used) of \(tiers[t].capacity) used and nothing to evict")
            }
            tiers[t].counters.evictions += 1
            let below = t + 1
            if below < tiers.count, tiers[below].capacity >= e.size, let data = try? readBytes(v, tier: t) {
                forget(v, tier: t)
                do {
                    try data.withUnsafeBytes { try place(v, $0, tier: below) }
                    tiers[t].counters.demotions += 1
                } catch let err as BlockStoreError {
                    // The tier below refused it (its disk is full): the block is dropped, the put goes on.
                    _ = fail(err)
                    tiers[t].counters.dropped += 1
                }
            } else {
                forget(v, tier: t)
                tiers[t].counters.dropped += 1
            }
        }
    }

    private func readBytes(_ key: String, tier t: Int) throws -> [UInt8] {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let data = try tiers[t].backend.read(key)
        account(t, bytes: data.count, since: t0, written: false)
        return data
    }

    private func forget(_ key: String, tier t: Int) {
        guard let e = index[key], e.tier == t else { return }
        tiers[t].backend.remove(key)
        tiers[t].used -= e.size; tiers[t].blocks -= 1
        policy.removed(key, tier: t)
        index[key] = nil
    }

    /// The block's bytes and the tier they came from. A hit below the top tier is promoted to the
    /// top (demoting what must make room); a block that fails its checksum is deleted and named.
    public func get(_ key: String, promote: Bool = true) throws -> (bytes: [UInt8], tier: TierKind) {
        guard let e = index[key] else {
            misses += 1
            throw fail(BlockStoreError(.unknownKey, "no block '\(key)' in any tier"))
        }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let read: Result<[UInt8], BlockStoreError>
        do { read = .success(try tiers[e.tier].backend.read(key)) } catch let err as BlockStoreError { read = .failure(err) }
        return try finishGet(key, entry: e, read: read, seconds: Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9, promote: promote)
    }

    /// The NVMe tier when it reads on a thread of its own and holds `key`: the caller may read the
    /// block there (`FileTier.submitReads`) and finish the get with `finishGet` when it is read.
    public func detachedReader(for key: String) -> FileTier? {
        guard let e = index[key], let f = tiers[e.tier].backend as? FileTier, f.readsDetached else { return nil }
        return f
    }

    /// Counts a use of `key` for eviction now: a block handed to a reader thread is not the next
    /// to go while it is read (the get that finishes it would otherwise miss).
    public func touch(_ key: String) {
        guard let e = index[key] else { return }
        policy.touched(key, tier: e.tier)
    }

    /// Finishes a get whose block `key` a tier's reader thread read (`seconds` it took): counted,
    /// promoted and checked as `get` does. If the block left that tier meanwhile, the get is
    /// answered from where it is now, or misses when it is gone (a block taken meanwhile is not
    /// served twice).
    public func finishGet(_ key: String, read: Result<[UInt8], BlockStoreError>, seconds: Double, promote: Bool = true) throws -> (bytes: [UInt8], tier: TierKind) {
        guard let e = index[key] else {
            misses += 1
            throw fail(BlockStoreError(.unknownKey, "no block '\(key)' in any tier (it left while being read)"))
        }
        guard tiers[e.tier].backend is FileTier else { return try get(key, promote: promote) }
        return try finishGet(key, entry: e, read: read, seconds: seconds, promote: promote)
    }

    private func finishGet(_ key: String, entry e: Entry, read: Result<[UInt8], BlockStoreError>, seconds: Double, promote: Bool) throws -> (bytes: [UInt8], tier: TierKind) {
        let data: [UInt8]
        switch read {
        case .success(let d):
            data = d
            account(e.tier, bytes: d.count, seconds: seconds, written: false)
        case .failure(let err):
            forget(key, tier: e.tier)
            misses += 1
            throw fail(err)
        }
        let from = tiers[e.tier].kind
        tiers[e.tier].counters.hits += 1
        if promote, e.tier > 0, tiers[0].capacity >= e.size {
            forget(key, tier: e.tier)
            do {
                try data.withUnsafeBytes { try place(key, $0, tier: 0) }
                tiers[e.tier].counters.promotions += 1
            } catch let err as BlockStoreError { _ = fail(err) }
        } else {
            policy.touched(key, tier: e.tier)
        }
        return (data, from)
    }

    public func exists(_ key: String) -> Bool { index[key] != nil }

    @discardableResult
    public func delete(_ key: String) -> Bool {
        guard let e = index[key] else { return false }
        forget(key, tier: e.tier)
        return true
    }

    /// Waits `seconds` precisely (an emulated tier's throttle is microseconds: sleeping would overshoot).
    public static func spinWait(_ seconds: Double) {
        let end = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
        if seconds > 0.002 { usleep(UInt32((seconds - 0.001) * 1e6)) }
        while DispatchTime.now().uptimeNanoseconds < end {}
    }
}
