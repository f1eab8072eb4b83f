import Cluster
import Foundation
import Protocol

/// Merges what every process recorded — the collector's file(s) and each process's spool — into
/// one timeline: duplicates (a batch sent again, or present in both the collector and the spool)
/// dropped by (instance, seq), timestamps aligned to the coordinator's clock with each process's
/// best offset estimate, and gaps in sequence numbers counted as lost measurements.
public struct MergedTrace {
    public struct Instance: Codable, Equatable {
        public var process: String
        public var instance: String
        public var pid: Int32
        public var host: String
        /// coordinator clock − this process's clock, and the estimate's error bound (half the RTT).
        public var offsetNanos: Int64
        public var errorBoundNanos: Int64?
        public var events: Int
        public var lastSeq: UInt64
        public var missing: UInt64
        /// Events only in the spool (never acknowledged by the collector), collected after the run.
        public var fromSpoolOnly: Int
    }

    public struct FaultWindow: Codable, Equatable {
        public var id: String
        public var action: String
        public var target: String
        public var startNanos: Int64
        public var endNanos: Int64?
        public var detail: String
    }

    public var instances: [Instance] = []
    /// Aligned events, sorted by time; `process` is the recording process's name.
    public var events: [(process: String, event: TraceEvent)] = []
    public var faults: [FaultWindow] = []
    public var truncatedFiles: [String] = []
    public var duplicatesDropped = 0

    public init() {}

    public var missingEvents: UInt64 { instances.reduce(0) { $0 + $1.missing } }
    public var startNanos: Int64 { events.first?.event.tsUnixNanos ?? 0 }
    public var endNanos: Int64 { events.map { $0.event.tsUnixNanos + $0.event.durationNanos }.max() ?? 0 }

    /// Reads every `*.bin` (collector) and `*.spool` file under `directory`.
    public static func load(directory: String) throws -> MergedTrace {
        let fm = FileManager.default
        guard let walker = fm.enumerator(atPath: directory) else {
            throw TraceSpool.SpoolError(path: directory, message: "no such folder")
        }
        var collected: [String] = [], spools: [String] = []
        while let rel = walker.nextObject() as? String {
            if rel.hasSuffix(".bin") { collected.append(directory + "/" + rel) }
            if rel.hasSuffix(".spool") { spools.append(directory + "/" + rel) }
        }
        var merged = MergedTrace()
        var inputs: [(TraceBatch, Bool)] = []
        for (files, isSpool) in [(collected.sorted(), false), (spools.sorted(), true)] {
            for f in files {
                let (batches, truncated) = try TraceSpool.read(file: f)
                if truncated { merged.truncatedFiles.append(f) }
                inputs += batches.map { ($0, isSpool) }
            }
        }
        merged.build(inputs)
        return merged
    }

    /// `batches`: each with whether it came from a spool (rather than the collector).
    public mutating func build(_ batches: [(TraceBatch, Bool)]) {
        struct Acc { var info: Instance; var seen: [UInt64: TraceEvent] = [:]; var collected = Set<UInt64>(); var bestError: Int64? }
        var acc: [String: Acc] = [:]
        for (b, isSpool) in batches {
            var a = acc[b.instance] ?? Acc(info: Instance(process: b.process, instance: b.instance, pid: b.pid, host: b.host, offsetNanos: 0,
                                                          errorBoundNanos: nil, events: 0, lastSeq: 0, missing: 0, fromSpoolOnly: 0))
            if b.hasClock && b.clock.samples > 0 && (a.bestError == nil || b.clock.errorBoundNanos < a.bestError!) {
                a.bestError = b.clock.errorBoundNanos
                a.info.offsetNanos = b.clock.offsetNanos
                a.info.errorBoundNanos = b.clock.errorBoundNanos
            }
            for e in b.events {
                if a.seen[e.seq] != nil { duplicatesDropped += 1 } else { a.seen[e.seq] = e }
                if !isSpool { a.collected.insert(e.seq) }
            }
            acc[b.instance] = a
        }
        var all: [(String, TraceEvent)] = []
        for (_, a) in acc.sorted(by: { $0.key < $1.key }) {
            var info = a.info
            info.events = a.seen.count
            info.lastSeq = a.seen.keys.max() ?? 0
            info.missing = info.lastSeq - UInt64(a.seen.count)
            info.fromSpoolOnly = a.seen.count - a.collected.count
            if info.process == "coordinator" || info.process == "experiment" || info.process.hasPrefix("operator") {
                info.errorBoundNanos = info.errorBoundNanos ?? 0   // the reference clock (same host as the collector)
            }
            instances.append(info)
            for (_, var e) in a.seen {
                e.tsUnixNanos += info.offsetNanos
                all.append((info.process, e))
            }
        }
        all.sort { ($0.1.tsUnixNanos, $0.0, $0.1.seq) < ($1.1.tsUnixNanos, $1.0, $1.1.seq) }
        events = all
        faults = MergedTrace.faultWindows(all)
    }

    /// Fault windows from the "fault start"/"fault end" instants the injector records.
    static func faultWindows(_ events: [(process: String, event: TraceEvent)]) -> [FaultWindow] {
        var open: [String: FaultWindow] = [:], done: [FaultWindow] = []
        for (_, e) in events where e.category == "fault" {
            let id = e.args["fault_id"] ?? e.name
            if e.args["edge"] == "start" {
                open[id] = FaultWindow(id: id, action: e.args["action"] ?? "", target: e.args["target"] ?? "", startNanos: e.tsUnixNanos,
                                       endNanos: nil, detail: e.args["detail"] ?? "")
            } else if e.args["edge"] == "end", var w = open.removeValue(forKey: id) {
                w.endNanos = e.tsUnixNanos
                done.append(w)
            }
        }
        return (done + open.values).sorted { ($0.startNanos, $0.id) < ($1.startNanos, $1.id) }
    }
}
