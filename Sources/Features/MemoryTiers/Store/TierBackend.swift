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
    /// Stores `bytes` under `key` (replacing what was there), durably where the tier is durable.
    func write(_ key: String, _ bytes: UnsafeRawBufferPointer, crc: UInt32) throws
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

/// DRAM: anonymous memory in the agent. Gone when the agent stops.
public final class DRAMTier: TierBackend {
    public let kind = TierKind.dram
    public var label: String { "DRAM (memory of the agent process)" }
    private var blocks: [String: [UInt8]] = [:]
    public init() {}

    public func write(_ key: String, _ bytes: UnsafeRawBufferPointer, crc: UInt32) throws {
        blocks[key] = [UInt8](unsafeUninitializedCapacity: bytes.count) { b, n in
            if let base = bytes.baseAddress, !bytes.isEmpty { memcpy(b.baseAddress!, base, bytes.count) }
            n = bytes.count
        }
    }

    public func read(_ key: String) throws -> [UInt8] {
        guard let b = blocks[key] else { throw BlockStoreError(.unknownKey, "DRAM holds no block '\(key)'") }
        return b
    }

    public func remove(_ key: String) { blocks[key] = nil }
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

    public func write(_ key: String, _ bytes: UnsafeRawBufferPointer, crc: UInt32) throws { try dram.write(key, bytes, crc: crc) }
    public func read(_ key: String) throws -> [UInt8] { try dram.read(key) }
    public func remove(_ key: String) { dram.remove(key) }

    public func emulatedDelay(bytes: Int, realSeconds: Double) -> Double {
        max(0, latencySeconds + Double(bytes) / bandwidthBytesPerSecond - realSeconds)
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
