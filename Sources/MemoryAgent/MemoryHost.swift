import Cluster
import Foundation
import Protocol

/// A memory host offering DRAM, CXL and NVMe tiers for offloaded KV caches and weights.
public final class MemoryHost: AgentBehavior {
    /// One tier as configured: kind, capacity and (for NVMe) its backing directory.
    public struct TierSpec: Sendable, Equatable {
        public var kind: MemoryTierKind
        public var capacityBytes: UInt64
        public var path: String

        public init(kind: MemoryTierKind, capacityBytes: UInt64, path: String = "") {
            self.kind = kind; self.capacityBytes = capacityBytes; self.path = path
        }

        /// Parses "dram:4GiB", "cxl:8GiB", "nvme:16GiB:/var/lib/strato/nvme".
        public static func parse(_ text: String) throws -> TierSpec {
            let parts = text.split(separator: ":", maxSplits: 2).map(String.init)
            guard parts.count >= 2, let kind = MemoryTierKind(name: parts[0]) else {
                throw SpecError("tier '\(text)': expected KIND:CAPACITY[:PATH] with KIND dram, cxl or nvme")
            }
            guard let bytes = ByteSize.parse(parts[1]), bytes > 0 else {
                throw SpecError("tier '\(text)': capacity '\(parts[1])' is not a size like 512MiB, 4GiB or 1TiB")
            }
            return TierSpec(kind: kind, capacityBytes: bytes, path: parts.count > 2 ? parts[2] : "")
        }
    }

    public struct SpecError: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    public let tiers: [MemoryTier]
    /// The features this host offers (its block store, set by the composition root).
    public var handlers: [FeatureHandler] = []
    /// Bytes in use per tier, from the block store (nil: none yet).
    public var usedBytes: ((MemoryTierKind) -> UInt64)?

    /// Probes the tiers (DRAM once, shared by CXL's emulation). `probe` may be passed in so many
    /// virtual hosts in one process share one measurement.
    public init(specs: [TierSpec], dramProbe: TierProbe.Figures? = nil, defaultNVMeDirectory: String) throws {
        guard !specs.isEmpty else { throw SpecError("a memory host needs at least one tier") }
        let dram = dramProbe ?? TierProbe.probeDRAM()
        var tiers: [MemoryTier] = []
        for spec in specs {
            var t = MemoryTier()
            t.kind = spec.kind
            t.capacityBytes = spec.capacityBytes
            let figures: TierProbe.Figures
            switch spec.kind {
            case .dram: figures = dram
            case .cxl: figures = TierProbe.emulateCXL(from: dram); t.emulated = true
            case .nvme:
                t.path = spec.path.isEmpty ? defaultNVMeDirectory : spec.path
                figures = try TierProbe.probeDirectory(t.path)
            default: throw SpecError("unsupported tier kind")
            }
            t.bandwidthGbps = figures.bandwidthGBps
            t.latencyNs = figures.latencyNs
            t.method = figures.method
            tiers.append(t)
        }
        self.tiers = tiers
    }

    public var kind: NodeKind { .memory }

    public func capabilities() -> Capabilities {
        var m = MemoryCapabilities()
        m.tiers = tiers
        var c = Capabilities()
        c.memory = m
        return c
    }

    public func fillTelemetry(_ telemetry: inout Telemetry) {
        telemetry.tiers = tiers.map { t in
            var tt = TierTelemetry()
            tt.kind = t.kind
            tt.usedBytes = usedBytes?(t.kind) ?? 0
            return tt
        }
    }

    public func running() -> [String] { [] }

    public func execute(_ command: Command) -> (ok: Bool, detail: String)? { nil }
}

/// Sizes written as people write them: "512MiB", "4GiB", "1.5TB", "1048576".
public enum ByteSize {
    public static func parse(_ text: String) -> UInt64? {
        let t = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("KiB", 1024), ("MiB", 1_048_576), ("GiB", 1_073_741_824), ("TiB", 1_099_511_627_776),
                                         ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12), ("B", 1)]
        for (suffix, factor) in units where t.hasSuffix(suffix) {
            guard let v = Double(t.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), v >= 0, v.isFinite else { return nil }
            // UInt64(_: Double) traps past UInt64.max; a size that large is an input error, not a crash.
            return UInt64(exactly: (v * factor).rounded(.down))
        }
        return UInt64(t)
    }

    public static func format(_ bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var v = Double(bytes), i = 0
        while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
        return i == 0 ? "\(bytes) B" : String(format: v >= 100 ? "%.0f %@" : "%.1f %@", v, units[i])
    }
}
