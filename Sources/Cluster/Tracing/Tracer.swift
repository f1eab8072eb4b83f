import Foundation
import Protocol
import Wire
import SwiftProtobuf

/// The process-wide trace recorder. Disabled (every call a cheap no-op) until `enable` is called.
///
/// Events get a sequence number per process instance, from 1 without gaps, so the merge can tell
/// a lost measurement from a quiet process. Events wait in memory until `takeBatch` hands them to
/// the shipper; every batch taken is first appended to this process's spool file (length-delimited
/// `TraceBatch` records), so what the collector never acknowledged is still on this host's disk
/// and collected after the run. `acknowledge` drops what the collector has made durable.
///
/// **Thread safety:** every method may be called from any thread (one lock, held briefly).
public final class Tracer: @unchecked Sendable {
    public static let shared = Tracer()

    private let lock = NSLock()
    private var on = false
    private var process = ""
    private var instance = ""
    private var seq: UInt64 = 0
    /// Recorded, not yet taken: plain structs, so recording costs an append under the lock; the
    /// protobuf messages are built when a batch is taken, on the shipping thread.
    private struct Raw {
        var seq: UInt64
        var phase: TracePhase
        var ts: Int64
        var duration: Int64
        var name: String
        var category: String
        var track: String
        var args: [String: String]
        var values: [String: Double]
        var flow: UInt64

        var message: TraceEvent {
            var e = TraceEvent()
            e.seq = seq; e.phase = phase; e.tsUnixNanos = ts; e.durationNanos = duration
            e.name = name; e.category = category; e.track = track; e.flowID = flow
            if !args.isEmpty { e.args = args }
            if !values.isEmpty { e.values = values }
            return e
        }
    }
    private var fresh: [Raw] = []
    /// Taken but not acknowledged, oldest first (re-sent after `resendAfterNanos`).
    private var inFlight: [(batch: TraceBatch, sentAtMono: Int64)] = []
    private var spool: FileHandle?
    public private(set) var spoolPath: String?
    /// 1 in N heartbeat exchanges is traced as messages (all other messages always are).
    public private(set) var heartbeatSample: UInt64 = 5
    private var flowCounter: UInt64 = 0
    /// Taken out of `fresh`, being built into a batch (outside the lock).
    private var converting = 0
    /// Above this many unshipped events the oldest are still kept on disk (spooled) but no longer
    /// in memory: the collector gets them from the spool after the run.
    public var maxBufferedEvents = 200_000

    public init() {}

    public var isEnabled: Bool { lock.lock(); defer { lock.unlock() }; return on }
    public var processName: String { lock.lock(); defer { lock.unlock() }; return process }
    public var instanceID: String { lock.lock(); defer { lock.unlock() }; return instance }

    /// Starts recording as `process`, spooling to `spoolDirectory/<process>-<instance>.spool`.
    public func enable(process: String, spoolDirectory: String?, heartbeatSample: UInt64 = 5) throws {
        lock.lock(); defer { lock.unlock() }
        self.process = process
        instance = String(UUID().uuidString.prefix(8)).lowercased()
        self.heartbeatSample = max(1, heartbeatSample)
        seq = 0
        fresh = []
        inFlight = []
        if let dir = spoolDirectory {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let path = "\(dir)/\(TraceSpool.safeName(process))-\(instance).spool"
            FileManager.default.createFile(atPath: path, contents: nil)
            guard let h = FileHandle(forWritingAtPath: path) else {
                throw TraceSpool.SpoolError(path: path, message: "cannot open the trace spool for writing")
            }
            spool = h
            spoolPath = path
        }
        on = true
    }

    /// Stops recording; what was not yet taken is spooled first.
    public func disable() {
        _ = takeBatch(max: Int.max, nowMono: 0, clock: nil)
        lock.lock(); defer { lock.unlock() }
        on = false
        try? spool?.close()
        spool = nil
    }

    // MARK: Recording

    @inline(__always)
    public func record(_ phase: TracePhase, _ name: String, category: String, track: String = "main",
                       at ts: Int64 = SystemClock.shared.wallNanos(), duration: Int64 = 0,
                       args: [String: String] = [:], values: [String: Double] = [:], flow: UInt64 = 0) {
        lock.lock(); defer { lock.unlock() }
        guard on else { return }
        seq += 1
        fresh.append(Raw(seq: seq, phase: phase, ts: ts, duration: duration, name: name, category: category, track: track,
                         args: args, values: values, flow: flow))
    }

    public func instant(_ name: String, category: String, track: String = "main", args: [String: String] = [:]) {
        record(.instant, name, category: category, track: track, args: args)
    }

    public func span(_ name: String, category: String, track: String = "main", start: Int64, end: Int64,
                     args: [String: String] = [:]) {
        record(.span, name, category: category, track: track, at: start, duration: max(1000, end - start), args: args)
    }

    public func counter(_ name: String, _ values: [String: Double], track: String = "counters") {
        record(.counter, name, category: "counter", track: track, values: values)
    }

    /// Whether a message is traced: never trace shipping itself; 1 in `heartbeatSample` heartbeats
    /// and acks, chosen from the message's own id so both ends agree; every other message.
    public func tracesMessage(_ e: Envelope) -> Bool {
        guard isEnabled else { return false }
        switch e.body {
        case .traceBatch?, .traceBatchAck?: return false
        case .heartbeat?: return Tracer.flowID(sender: e.sender, messageID: e.messageID) % heartbeatSample == 0
        case .heartbeatAck?: return e.inReplyTo % heartbeatSample == 0
        default: return true
        }
    }

    /// Marks an outgoing message as traced: its trace context carries a fresh span id, which is
    /// the flow id both ends record (unique across restarts, unlike message ids). Returns it.
    public func markTraced(_ e: inout Envelope) -> UInt64 {
        let id = nextFlowID()
        e.trace.sampled = true
        e.trace.spanID = id
        return id
    }

    /// As `markTraced(_:)` for an envelope sent as header and body.
    public func markTraced(_ h: inout EnvelopeHeader) -> UInt64 {
        let id = nextFlowID()
        var t = h.trace ?? TraceContext()
        t.sampled = true
        t.spanID = id
        h.trace = t
        return id
    }

    private func nextFlowID() -> UInt64 {
        lock.lock(); defer { lock.unlock() }
        flowCounter &+= 1
        let id = Tracer.flowID(sender: process + instance, messageID: flowCounter)
        return id == 0 ? 1 : id
    }

    /// As `tracesMessage(_:)` for a heartbeat or ack sent as header and body.
    public func tracesMessage(_ h: EnvelopeHeader, _ body: HotBody) -> Bool {
        guard isEnabled else { return false }
        switch body {
        case .heartbeat: return Tracer.flowID(sender: h.sender, messageID: h.messageID) % heartbeatSample == 0
        case .heartbeatAck: return h.inReplyTo % heartbeatSample == 0
        }
    }

    /// As `receivedFlow(_:)` for a message received as header and body.
    public func receivedFlow(_ h: EnvelopeHeader) -> UInt64 {
        guard let t = h.trace, t.sampled, t.spanID != 0, isEnabled else { return 0 }
        return t.spanID
    }

    /// The flow id of a received message the sender traced (0: not traced, or tracing is off here).
    public func receivedFlow(_ e: Envelope) -> UInt64 {
        guard e.hasTrace, e.trace.sampled, e.trace.spanID != 0, isEnabled else { return 0 }
        return e.trace.spanID
    }

    /// Hashes a sender and a number into a flow id. at its sender to its FLOW_IN at its receiver.
    public static func flowID(sender: String, messageID: UInt64) -> UInt64 {
        var h: UInt64 = 0xcbf29ce484222325   // FNV-1a, 64 bit
        for b in sender.utf8 { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        var m = messageID
        for _ in 0..<8 { h = (h ^ (m & 0xff)) &* 0x100000001b3; m >>= 8 }
        return h == 0 ? 1 : h
    }

    // MARK: Shipping

    /// The next batch to ship: fresh events (up to `max`), spooled before they leave, or else the
    /// oldest unacknowledged batch once it has waited `resendAfterNanos`. Nil when nothing is due.
    public func takeBatch(max: Int = 2000, nowMono: Int64, clock: ClockEstimate?,
                          resendAfterNanos: Int64 = 2_000_000_000) -> TraceBatch? {
        lock.lock()
        guard on || !fresh.isEmpty else { lock.unlock(); return nil }
        if let first = inFlight.first, nowMono - first.sentAtMono >= resendAfterNanos {
            inFlight[0].sentAtMono = nowMono
            lock.unlock()
            var b = first.batch
            if let c = clock { b.clock = c }
            return b
        }
        guard !fresh.isEmpty else { lock.unlock(); return nil }
        let n = Swift.min(max, fresh.count)
        let taken = Array(fresh.prefix(n))
        fresh.removeFirst(n)
        converting += n
        var b = TraceBatch()
        b.process = process
        b.instance = instance
        lock.unlock()
        // Building and encoding the batch happens outside the lock, so recording never waits on it.
        b.pid = getpid()
        b.host = ProcessStats.hostName
        if let c = clock { b.clock = c }
        b.events = taken.map(\.message)
        let framed = TraceSpool.frame(b)
        lock.lock(); defer { lock.unlock() }
        converting -= n
        if let s = spool { try? s.write(contentsOf: framed) }
        inFlight.append((b, nowMono))
        // Bound memory: the spool holds everything, so the oldest unacknowledged batches may go.
        var held = inFlight.reduce(0) { $0 + $1.batch.events.count }
        while held > maxBufferedEvents && inFlight.count > 1 {
            held -= inFlight[0].batch.events.count
            inFlight.removeFirst()
        }
        return b
    }

    /// The collector made everything up to `throughSeq` durable.
    public func acknowledge(_ ack: TraceBatchAck) {
        lock.lock(); defer { lock.unlock() }
        guard ack.instance == instance else { return }
        inFlight.removeAll { ($0.batch.events.last?.seq ?? 0) <= ack.throughSeq }
    }

    /// Events recorded but not yet acknowledged (for tests and the shutdown wait).
    public var unacknowledged: Int {
        lock.lock(); defer { lock.unlock() }
        return fresh.count + converting + inFlight.reduce(0) { $0 + $1.batch.events.count }
    }

    public var recordedCount: UInt64 { lock.lock(); defer { lock.unlock() }; return seq }
}

/// Spool and collector files: a sequence of length-delimited `TraceBatch` records (a varint
/// length, then the bytes). A record cut short by a crash ends the file; everything before it reads.
public enum TraceSpool {
    public struct SpoolError: Error, CustomStringConvertible {
        public let path: String
        public let message: String
        public var description: String { "\(path): \(message)" }
        public init(path: String, message: String) { self.path = path; self.message = message }
    }

    public static func safeName(_ s: String) -> String {
        String(s.map { $0.isLetter || $0.isNumber || "-_.".contains($0) ? $0 : "_" })
    }

    public static func frame(_ batch: TraceBatch) -> Data {
        let body = (try? batch.serializedData()) ?? Data()
        var out = Data()
        var n = UInt64(body.count)
        repeat {
            var byte = UInt8(n & 0x7f)
            n >>= 7
            if n != 0 { byte |= 0x80 }
            out.append(byte)
        } while n != 0
        out.append(body)
        return out
    }

    /// Every whole batch in `data`; `truncated` is true when the end held a partial record.
    public static func read(_ data: Data) -> (batches: [TraceBatch], truncated: Bool) {
        var out: [TraceBatch] = []
        let bytes = [UInt8](data)
        var i = 0
        while i < bytes.count {
            var len: UInt64 = 0, shift: UInt64 = 0, j = i
            var complete = false
            while j < bytes.count && shift < 64 {
                let b = bytes[j]; j += 1
                len |= UInt64(b & 0x7f) << shift
                if b & 0x80 == 0 { complete = true; break }
                shift += 7
            }
            guard complete, len <= UInt64(bytes.count - j),
                  let b = try? TraceBatch(serializedBytes: Array(bytes[j..<(j + Int(len))])) else {
                return (out, true)
            }
            out.append(b)
            i = j + Int(len)
        }
        return (out, false)
    }

    public static func read(file: String) throws -> (batches: [TraceBatch], truncated: Bool) {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw SpoolError(path: file, message: "cannot read the trace file")
        }
        return read(data)
    }
}
