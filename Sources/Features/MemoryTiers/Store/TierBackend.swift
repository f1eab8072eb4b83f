import DataPlane
import Foundation

/// The tiers of a memory host, fastest first.
public enum TierKind: String, Sendable, CaseIterable, Comparable {
    case dram, cxl, nvme
    public static func < (a: TierKind, b: TierKind) -> Bool { a.rank < b.rank }
    var rank: Int { switch self { case .dram: 0; case .cxl: 1; case .nvme: 2 } }
}

/// A block store's named errors: each has a code (counted per code in the telemetry) and says
/// what was wrong.
public struct BlockStoreError: Error, CustomStringConvertible, Equatable {
    public enum Code: String, Sendable, CaseIterable {
        /// No tier has room for it and nothing can be evicted to make some.
        case overCapacity = "over-capacity"
        /// The block is larger than every tier.
        case tooLarge = "too-large"
        case unknownKey = "unknown-key"
        /// Its bytes do not match the checksum they were stored with.
        case corrupt
        /// The tier's directory is missing, unreadable or read-only.
        case tierUnavailable = "tier-unavailable"
        /// The tier's disk is full.
        case tierFull = "tier-full"
        case io
        case badKey = "bad-key"
    }
    public var code: Code
    public var message: String
    public init(_ code: Code, _ message: String) { self.code = code; self.message = message }
    public var description: String { "\(code.rawValue): \(message)" }
}

/// Where a tier keeps its bytes. The store above decides what lives in which tier; a backend
/// only holds bytes under keys. Called from one thread (the memory host's session).
public protocol TierBackend: AnyObject {
    var kind: TierKind { get }
    /// What the tier is, for every output: real or emulated, and how.
    var label: String { get }
    var emulated: Bool { get }
    /// Stores `bytes` under `key` (replacing what was there), durably where the tier is durable
    /// (with a checksum there: memory does not rot, a disk may).
    func write(_ key: String, _ bytes: UnsafeRawBufferPointer) throws
    /// The bytes under `key`; a durable tier checks them against the checksum they were stored with.
    func read(_ key: String) throws -> [UInt8]
    func remove(_ key: String)
    /// What survived a restart (durable tiers), oldest use first.
    func recovered() -> [(key: String, size: Int)]
    /// Extra seconds an access of `bytes` should take beyond the `realSeconds` the copy took (an
    /// emulated tier's throttle); 0 for a real tier.
    func emulatedDelay(bytes: Int, realSeconds: Double) -> Double
}

extension TierBackend {
    public var emulated: Bool { false }
    public func recovered() -> [(key: String, size: Int)] { [] }
    public func emulatedDelay(bytes: Int, realSeconds: Double) -> Double { 0 }
}

/// A tier in memory: it can take a filled buffer as it is (no second copy) and hands out
/// recycled buffers to fill, so a put in steady state touches no fresh pages.
public protocol MemoryTierBackend: TierBackend {
    /// Keeps `bytes` under `key` without copying them.
    func adopt(_ key: String, _ bytes: [UInt8])
    /// A buffer of `count` bytes to fill (recycled from removed blocks when one fits).
    func buffer(_ count: Int) -> [UInt8]
}

/// DRAM: anonymous memory in the agent. Gone when the agent stops. Removed blocks' buffers are
/// kept for reuse (up to `poolBytes`): fresh pages cost more than the copy into them.
public final class DRAMTier: MemoryTierBackend {
    public let kind = TierKind.dram
    public var label: String { "DRAM (memory of the agent process)" }
    private var blocks: [String: [UInt8]] = [:]
    private var pool: [Int: [[UInt8]]] = [:]
    private var pooled = 0
    public var poolBytes = 256 << 20
    public init() {}

    /// Allocates and touches `count` buffers of `bytes` up front (as a serving stack allocates its
    /// CPU cache at start), so the first puts do not pay for fresh pages.
    public func preallocate(count: Int, bytes: Int) {
        poolBytes = max(poolBytes, count * bytes)
        for _ in 0..<count { recycle([UInt8](repeating: 0, count: bytes)) }
    }

    private func recycle(_ b: [UInt8]) {
        guard pooled + b.count <= poolBytes, !b.isEmpty else { return }
        pool[b.count, default: []].append(b)
        pooled += b.count
    }

    public func buffer(_ count: Int) -> [UInt8] {
        if var list = pool[count], let b = list.popLast() {
            pool[count] = list
            pooled -= count
            return b
        }
        return [UInt8](repeating: 0, count: count)
    }

    public func adopt(_ key: String, _ bytes: [UInt8]) {
        if let old = blocks.updateValue(bytes, forKey: key) { recycle(old) }
    }

    public func write(_ key: String, _ bytes: UnsafeRawBufferPointer) throws {
        var b = buffer(bytes.count)
        if let base = bytes.baseAddress, !bytes.isEmpty { b.withUnsafeMutableBytes { _ = memcpy($0.baseAddress!, base, bytes.count) } }
        adopt(key, b)
    }

    public func read(_ key: String) throws -> [UInt8] {
        guard let b = blocks[key] else { throw BlockStoreError(.unknownKey, "DRAM holds no block '\(key)'") }
        return b
    }

    public func remove(_ key: String) { if let b = blocks.removeValue(forKey: key) { recycle(b) } }
}

/// CXL-attached memory. Where the host has a CPU-less NUMA node (how Linux shows a CXL memory
/// expander) it is named; binding allocations to it needs libnuma's mbind, which this build does not
/// link, so the tier is always DRAM throttled to the published CXL figures and labelled emulated:
/// an access of n bytes takes at least latency × 2.543 + n ÷ (bandwidth × 51/70) of this host's
/// measured DRAM (D2.1, T2.3: +154.3 % latency, 51 vs 70 GiB/s).
public final class EmulatedCXLTier: TierBackend {
    public let kind = TierKind.cxl
    public let emulated = true
    public static let latencyFactor = 2.543
    public static let bandwidthFactor = 51.0 / 70.0
    private let dram = DRAMTier()
    /// This host's DRAM, measured.
    public let dramBandwidthBytesPerSecond: Double
    public let dramLatencySeconds: Double
    public let numaNode: Int?

    public init(dramBandwidthBytesPerSecond: Double, dramLatencySeconds: Double, numaNode: Int? = EmulatedCXLTier.cpulessNUMANode()) {
        self.dramBandwidthBytesPerSecond = dramBandwidthBytesPerSecond
        self.dramLatencySeconds = dramLatencySeconds
        self.numaNode = numaNode
    }

    public var bandwidthBytesPerSecond: Double { dramBandwidthBytesPerSecond * Self.bandwidthFactor }
    public var latencySeconds: Double { dramLatencySeconds * Self.latencyFactor }

    public var label: String {
        let found = numaNode.map { "CPU-less NUMA node \($0) found but not bound (no libnuma); " } ?? "no CXL device on this host; "
        return "CXL (emulated: \(found)DRAM throttled to latency ×\(Self.latencyFactor), bandwidth ×51/70 of this host's DRAM, D2.1)"
    }

    public func write(_ key: String, _ bytes: UnsafeRawBufferPointer) throws { try dram.write(key, bytes) }
    public func read(_ key: String) throws -> [UInt8] { try dram.read(key) }
    public func remove(_ key: String) { dram.remove(key) }

    /// What copying `bytes` takes in this host's DRAM, by its probe (which counts a copy's read
    /// and write of every byte): for a buffer filled, or read, outside the store.
    public func dramSeconds(_ bytes: Int) -> Double { 2 * Double(bytes) / dramBandwidthBytesPerSecond }

    /// The access took `realSeconds` in DRAM (at least a copy of its bytes: a read hands the
    /// reader a block it copies out of); CXL's bandwidth and latency stretch it.
    public func emulatedDelay(bytes: Int, realSeconds: Double) -> Double {
        max(realSeconds, dramSeconds(bytes)) * (1 / Self.bandwidthFactor - 1) + dramLatencySeconds * (Self.latencyFactor - 1)
    }

    /// A NUMA node with memory and no CPUs (how a CXL Type-3 expander appears), from /sys.
    public static func cpulessNUMANode(root: String = "/sys/devices/system/node") -> Int? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: root) else { return nil }
        for e in entries.sorted() where e.hasPrefix("node") {
            guard let n = Int(e.dropFirst(4)),
                  let cpus = try? String(contentsOfFile: "\(root)/\(e)/cpulist", encoding: .utf8) else { continue }
            if cpus.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return n }
        }
        return nil
    }
}
