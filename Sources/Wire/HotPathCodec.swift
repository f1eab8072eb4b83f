import Foundation
import Protocol

/// Hand-written protobuf encoding and decoding of the two hottest envelopes — `Heartbeat` and
/// `HeartbeatAck` (thousands a second at the coordinator) — byte for byte what SwiftProtobuf
/// writes and reads, so every peer (the C SDK, Python) sees the same contract.
///
/// Why: SwiftProtobuf's generic visitors cost microseconds per small envelope (two traversals to
/// encode, reflection-like field dispatch to decode), which made the control plane ten times slower
/// than raw libzmq (`strato bench wire`). This path writes varints straight into one buffer and
/// parses the known fields in place.
///
/// Anything it does not fully understand — another body, an unknown field, a repeated singular
/// field, a wire type it does not expect, invalid UTF-8, unknown fields kept on a message — makes
/// it return nil, and the caller uses SwiftProtobuf, which produces the same result or the same
/// error. Pure; tested for equality with SwiftProtobuf on random messages and mutated frames.
enum HotPathCodec {
    // MARK: Encoding

    static func encode(_ e: Envelope) -> [UInt8]? {
        guard e.unknownFields.data.isEmpty else { return nil }
        let body: HotBody
        switch e.body {
        case .heartbeat(let hb)?: body = .heartbeat(hb)
        case .heartbeatAck(let ack)?: body = .heartbeatAck(ack)
        default: return nil
        }
        return encode(EnvelopeHeader(e), body)
    }

    /// The envelope of `header` and `body`, without building an `Envelope` (whose storage is
    /// copied on its first setter and whose oneof is copied on every read and write).
    static func encode(_ header: EnvelopeHeader, _ body: HotBody) -> [UInt8]? {
        var w = Writer(capacity: 256)
        guard write(header, body, into: &w) else { return nil }
        return w.bytes()
    }

    /// As `encode(_:_:)`, lending the bytes to `use` (no array made of them); nil when this path
    /// does not take the body.
    static func withEncoded(_ header: EnvelopeHeader, _ body: HotBody, _ use: (UnsafeRawBufferPointer) throws -> Void) rethrows -> Bool {
        // Written on the stack (a heartbeat is about a hundred bytes): no allocation per message.
        try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 512) { scratch in
            var w = Writer(scratch: scratch)
            guard write(header, body, into: &w) else { return false }
            try w.withBytes(use)
            return true
        }
    }

    private static func write(_ h: EnvelopeHeader, _ body: HotBody, into w: inout Writer) -> Bool {
        w.varintField(1, UInt64(h.protocolVersion))
        w.varintField(2, h.messageID)
        w.stringField(3, h.sender)
        w.varintField(4, UInt64(bitPattern: h.sentAtUnixNanos))
        if let t = h.trace {
            guard t.unknownFields.data.isEmpty else { return false }
            w.message(5) { w in
                w.bytesField(1, t.traceID)
                w.varintField(2, t.spanID)
                w.varintField(3, t.parentSpanID)
                if t.sampled { w.varintField(4, 1) }
            }
        }
        w.stringField(6, h.recipient)
        w.varintField(7, h.inReplyTo)
        switch body {
        case .heartbeat(let hb): return encodeHeartbeat(hb, into: &w)
        case .heartbeatAck(let ack): return encodeAck(ack, into: &w)
        }
    }

    private static func encodeHeartbeat(_ hb: Heartbeat, into w: inout Writer) -> Bool {
        guard hb.unknownFields.data.isEmpty else { return false }
        let hasTelemetry = hb.hasTelemetry
        let telemetry = hb.telemetry            // one copy out of the message, read below
        if hasTelemetry {
            if !telemetry.unknownFields.data.isEmpty { return false }
            for g in telemetry.gpus where !g.unknownFields.data.isEmpty { return false }
            for t in telemetry.tiers where !t.unknownFields.data.isEmpty { return false }
        }
        if hb.hasClock && !hb.clock.unknownFields.data.isEmpty { return false }
        for r in hb.reports where !r.unknownFields.data.isEmpty { return false }
        w.message(12) { w in
            w.stringField(1, hb.nodeID)
            w.varintField(2, hb.incarnation)
            w.varintField(3, hb.sequence)
            if hasTelemetry {
                let t = telemetry
                w.message(4) { w in
                    w.doubleField(1, t.processCpuSeconds)
                    w.varintField(2, t.processRssBytes)
                    for g in t.gpus {
                        w.message(3) { w in
                            w.varintField(1, UInt64(g.index))
                            w.doubleField(2, g.utilization)
                            w.varintField(3, g.memoryUsedBytes)
                        }
                    }
                    for tier in t.tiers {
                        w.message(4) { w in
                            w.varintField(1, UInt64(bitPattern: Int64(tier.kind.rawValue)))
                            w.varintField(2, tier.usedBytes)
                        }
                    }
                    w.varintField(5, UInt64(t.renderSlotsUsed))
                    w.varintField(6, t.messagesSent)
                    w.varintField(7, t.messagesReceived)
                }
            }
            if hb.hasClock {
                let c = hb.clock
                w.message(5) { w in
                    w.varintField(1, UInt64(bitPattern: c.offsetNanos))
                    w.varintField(2, UInt64(bitPattern: c.errorBoundNanos))
                    w.varintField(3, UInt64(c.samples))
                }
            }
            for r in hb.running { w.stringField(6, r, always: true) }
            for r in hb.reports {
                w.message(9) { w in
                    w.stringField(1, r.feature)
                    w.stringField(2, r.key)
                    w.bytesField(3, r.body)
                }
            }
        }
        return true
    }

    private static func encodeAck(_ ack: HeartbeatAck, into w: inout Writer) -> Bool {
        guard ack.unknownFields.data.isEmpty else { return false }
        for s in ack.settled where !s.unknownFields.data.isEmpty { return false }
        w.message(13) { w in
            w.stringField(1, ack.nodeID)
            w.varintField(2, ack.sequence)
            w.varintField(3, UInt64(bitPattern: ack.receivedAtUnixNanos))
            w.varintField(4, UInt64(bitPattern: ack.sentAtUnixNanos))
            w.varintField(5, ack.coordinatorEpoch)
            for s in ack.settled {
                w.message(8) { w in
                    w.stringField(1, s.feature)
                    for k in s.keys { w.stringField(2, k, always: true) }
                }
            }
        }
        return true
    }

    /// Writes into one growing raw buffer: no per-byte capacity or uniqueness checks, which
    /// `[UInt8].append` pays on every call (a third of the encode time before).
    struct Writer: ~Copyable {
        private var base: UnsafeMutablePointer<UInt8>
        private var capacity: Int
        private(set) var count = 0
        /// Whether `base` is this writer's to free (false while it writes into a lent scratch buffer).
        private var owned: Bool

        init(capacity: Int) {
            self.capacity = max(capacity, 16)
            base = .allocate(capacity: self.capacity)
            owned = true
        }
        /// Writes into `scratch` (lent for the writer's life), moving to the heap if it outgrows it.
        init(scratch: UnsafeMutableBufferPointer<UInt8>) {
            base = scratch.baseAddress!
            capacity = scratch.count
            owned = false
        }
        deinit { if owned { base.deallocate() } }

        /// The bytes written, lent for the call.
        func withBytes(_ body: (UnsafeRawBufferPointer) throws -> Void) rethrows {
            try body(UnsafeRawBufferPointer(start: base, count: count))
        }

        /// The bytes written, as the array the codec returns.
        func bytes() -> [UInt8] {
            [UInt8](unsafeUninitializedCapacity: count) { out, n in
                out.baseAddress!.update(from: base, count: count)
                n = count
            }
        }

        @inline(__always) private mutating func ensure(_ more: Int) {
            if count + more > capacity { grow(count + more) }
        }
        private mutating func grow(_ needed: Int) {
            var c = capacity * 2
            while c < needed { c *= 2 }
            let b = UnsafeMutablePointer<UInt8>.allocate(capacity: c)
            b.update(from: base, count: count)
            if owned { base.deallocate() }
            base = b
            capacity = c
            owned = true
        }

        @inline(__always) mutating func varint(_ v: UInt64) {
            ensure(10)
            var v = v
            while v >= 0x80 { base[count] = UInt8(truncatingIfNeeded: v) | 0x80; count += 1; v >>= 7 }
            base[count] = UInt8(v); count += 1
        }
        @inline(__always) mutating func tag(_ field: Int, _ wireType: UInt64) { varint(UInt64(field) << 3 | wireType) }
        /// Proto3: a zero scalar is not written.
        @inline(__always) mutating func varintField(_ field: Int, _ v: UInt64) { if v != 0 { tag(field, 0); varint(v) } }
        mutating func doubleField(_ field: Int, _ v: Double) {
            let bits = v.bitPattern
            guard bits != 0 else { return }
            tag(field, 1)
            ensure(8)
            withUnsafeBytes(of: bits.littleEndian) { UnsafeMutableRawPointer(base + count).copyMemory(from: $0.baseAddress!, byteCount: 8) }
            count += 8
        }
        mutating func raw(_ p: UnsafeRawBufferPointer) {
            ensure(p.count)
            if let a = p.baseAddress, p.count > 0 { UnsafeMutableRawPointer(base + count).copyMemory(from: a, byteCount: p.count) }
            count += p.count
        }
        mutating func stringField(_ field: Int, _ s: String, always: Bool = false) {
            if s.isEmpty && !always { return }
            tag(field, 2)
            var s = s
            s.withUTF8 { p in varint(UInt64(p.count)); raw(UnsafeRawBufferPointer(p)) }
        }
        mutating func bytesField(_ field: Int, _ d: Data) {
            if d.isEmpty { return }
            tag(field, 2); varint(UInt64(d.count))
            d.withUnsafeBytes { raw($0) }
        }
        /// A length-delimited submessage: written in place, then its length put before it (one
        /// byte for the small messages of this path; the body is moved up when longer).
        @inline(__always) mutating func message(_ field: Int, _ body: (inout Writer) -> Void) {
            tag(field, 2)
            ensure(1)
            let lengthAt = count
            count += 1
            body(&self)
            let length = count - lengthAt - 1
            if length < 0x80 {
                base[lengthAt] = UInt8(length)
                return
            }
            var prefix: [UInt8] = []
            var v = UInt64(length)
            while v >= 0x80 { prefix.append(UInt8(truncatingIfNeeded: v) | 0x80); v >>= 7 }
            prefix.append(UInt8(v))
            let extra = prefix.count - 1
            ensure(extra)
            (base + lengthAt + 1 + extra).update(from: base + lengthAt + 1, count: length)   // overlapping move
            for (k, b) in prefix.enumerated() { base[lengthAt + k] = b }
            count += extra
        }
    }

    // MARK: Decoding

    /// The envelope in `frame` when it is a heartbeat or heartbeat ack this path reads entirely;
    /// nil to let SwiftProtobuf decide (every other body, anything unexpected, every error).
    static func decode(_ frame: [UInt8]) -> Envelope? {
        frame.withUnsafeBufferPointer { decodeFrame($0, telemetryAsBytes: false) }?.envelope
    }

    /// The header and body of a heartbeat or heartbeat ack envelope, read in place; nil as above.
    /// The body is read after the header, straight into the frame that carries it.
    /// With `telemetryAsBytes` a heartbeat's telemetry is checked and kept as its bytes.
    static func decodeFrame(_ p: UnsafeBufferPointer<UInt8>, telemetryAsBytes: Bool = true) -> DecodedFrame? {
        var r = Reader(p, 0, p.count)
        var h = EnvelopeHeader(protocolVersion: 0, messageID: 0, sender: "", sentAtUnixNanos: 0)
        var bodyField = 0, bodyAt = 0, bodyEnd = 0
        var seen: UInt32 = 0
        while !r.atEnd {
            guard let (field, wire) = r.tag(), field < 32 else { return nil }
            // A singular field seen twice merges or overrides in protobuf: leave that to SwiftProtobuf.
            guard seen & (1 << field) == 0 else { return nil }
            seen |= 1 << field
            switch (field, wire) {
            case (1, 0): guard let v = r.varint(), v <= UInt64(UInt32.max) else { return nil }; h.protocolVersion = UInt32(v)
            case (2, 0): guard let v = r.varint() else { return nil }; h.messageID = v
            case (3, 2): guard let s = r.string() else { return nil }; h.sender = s
            case (4, 0): guard let v = r.varint() else { return nil }; h.sentAtUnixNanos = Int64(bitPattern: v)
            case (5, 2):
                guard var sub = r.submessage(), let t = decodeTrace(&sub) else { return nil }
                h.trace = t
            case (6, 2): guard let s = r.string() else { return nil }; h.recipient = s
            case (7, 0): guard let v = r.varint() else { return nil }; h.inReplyTo = v
            case (12, 2), (13, 2):
                // One body only (`seen` holds the other's bit): two oneof members is SwiftProtobuf's case.
                guard seen & (1 << (field == 12 ? 13 : 12)) == 0, let sub = r.submessage() else { return nil }
                bodyField = field; bodyAt = sub.i; bodyEnd = sub.end
            default: return nil
            }
        }
        var sub = Reader(p, bodyAt, bodyEnd)
        if bodyField == 12 {
            var telemetry: Range<Int>?
            // Read into one value in place: an optional `Heartbeat` returned would be copied and
            // destroyed through its value witnesses.
            var hb = Heartbeat()
            guard telemetryAsBytes ? decodeHeartbeat(&sub, into: &hb, telemetry: &telemetry) : decodeHeartbeat(&sub, into: &hb) else { return nil }
            var kept: TelemetryBytes?
            if let range = telemetry, let base = p.baseAddress {
                kept = TelemetryBytes(checked: UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count))
            }
            return .heartbeat(HeartbeatFrame(h, hb, telemetry: kept))
        }
        if bodyField == 13 {
            guard let ack = decodeAck(&sub) else { return nil }
            return .heartbeatAck(HeartbeatAckFrame(h, ack))
        }
        return nil
    }

    private static func decodeTrace(_ r: inout Reader) -> TraceContext? {
        var t = TraceContext()
        var seen: UInt32 = 0
        while !r.atEnd {
            guard let (field, wire) = r.tag(), field < 32, seen & (1 << field) == 0 else { return nil }
            seen |= 1 << field
            switch (field, wire) {
            case (1, 2): guard let b = r.bytes() else { return nil }; t.traceID = Data(b)
            case (2, 0): guard let v = r.varint() else { return nil }; t.spanID = v
            case (3, 0): guard let v = r.varint() else { return nil }; t.parentSpanID = v
            case (4, 0): guard let v = r.varint(), v <= 1 else { return nil }; t.sampled = v == 1
            default: return nil
            }
        }
        return t
    }

    /// The heartbeat in `r`. With `telemetry` its telemetry is checked but not built: the range of
    /// its bytes comes back there instead.
    private static func decodeHeartbeat(_ r: inout Reader, into hb: inout Heartbeat, telemetry: UnsafeMutablePointer<Range<Int>?>? = nil) -> Bool {
        var seen: UInt32 = 0
        while !r.atEnd {
            guard let (field, wire) = r.tag(), field < 32 else { return false }
            if field != 6 && field != 9 {
                guard seen & (1 << field) == 0 else { return false }
                seen |= 1 << field
            }
            switch (field, wire) {
            case (1, 2): guard let s = r.string() else { return false }; hb.nodeID = s
            case (2, 0): guard let v = r.varint() else { return false }; hb.incarnation = v
            case (3, 0): guard let v = r.varint() else { return false }; hb.sequence = v
            case (4, 2):
                guard var sub = r.submessage() else { return false }
                if let telemetry {
                    let range = sub.i..<sub.end
                    guard scanTelemetry(&sub, into: nil) else { return false }
                    telemetry.pointee = range
                } else {
                    var t = Telemetry()
                    guard scanTelemetry(&sub, into: &t) else { return false }
                    hb.telemetry = t
                }
            case (5, 2):
                guard var sub = r.submessage() else { return false }
                var c = ClockEstimate()
                var cs: UInt32 = 0
                while !sub.atEnd {
                    guard let (f, wt) = sub.tag(), f < 32, cs & (1 << f) == 0 else { return false }
                    cs |= 1 << f
                    switch (f, wt) {
                    case (1, 0): guard let v = sub.varint() else { return false }; c.offsetNanos = Int64(bitPattern: v)
                    case (2, 0): guard let v = sub.varint() else { return false }; c.errorBoundNanos = Int64(bitPattern: v)
                    case (3, 0): guard let v = sub.varint(), v <= UInt64(UInt32.max) else { return false }; c.samples = UInt32(v)
                    default: return false
                    }
                }
                hb.clock = c
            case (6, 2): guard let s = r.string() else { return false }; hb.running.append(s)
            case (9, 2):
                guard var sub = r.submessage() else { return false }
                var fr = FeatureReport()
                var fs: UInt32 = 0
                while !sub.atEnd {
                    guard let (f, wt) = sub.tag(), f < 32, fs & (1 << f) == 0 else { return false }
                    fs |= 1 << f
                    switch (f, wt) {
                    case (1, 2): guard let s = sub.string() else { return false }; fr.feature = s
                    case (2, 2): guard let s = sub.string() else { return false }; fr.key = s
                    case (3, 2): guard let b = sub.bytes() else { return false }; fr.body = Data(b)
                    default: return false
                    }
                }
                hb.reports.append(fr)
            default: return false
            }
        }
        return true
    }

    /// Reads a `Telemetry` into `t`, or only checks it when `t` is nil (the same checks either way:
    /// false for anything this path leaves to SwiftProtobuf).
    static func scanTelemetry(_ r: inout Reader, into t: UnsafeMutablePointer<Telemetry>?) -> Bool {
        var seen: UInt32 = 0
        while !r.atEnd {
            guard let (field, wire) = r.tag(), field < 32 else { return false }
            if field != 3 && field != 4 {
                guard seen & (1 << field) == 0 else { return false }
                seen |= 1 << field
            }
            switch (field, wire) {
            case (1, 1): guard let d = r.double() else { return false }; t?.pointee.processCpuSeconds = d
            case (2, 0): guard let v = r.varint() else { return false }; t?.pointee.processRssBytes = v
            case (3, 2):
                guard var sub = r.submessage() else { return false }
                var g = GpuTelemetry()
                var gs: UInt32 = 0
                while !sub.atEnd {
                    guard let (f, wt) = sub.tag(), f < 32, gs & (1 << f) == 0 else { return false }
                    gs |= 1 << f
                    switch (f, wt) {
                    case (1, 0): guard let v = sub.varint(), v <= UInt64(UInt32.max) else { return false }; g.index = UInt32(v)
                    case (2, 1): guard let d = sub.double() else { return false }; g.utilization = d
                    case (3, 0): guard let v = sub.varint() else { return false }; g.memoryUsedBytes = v
                    default: return false
                    }
                }
                if let t {
                    if t.pointee.gpus.isEmpty { t.pointee.gpus.reserveCapacity(8) }
                    t.pointee.gpus.append(g)
                }
            case (4, 2):
                guard var sub = r.submessage() else { return false }
                var tier = TierTelemetry()
                var ts: UInt32 = 0
                while !sub.atEnd {
                    guard let (f, wt) = sub.tag(), f < 32, ts & (1 << f) == 0 else { return false }
                    ts |= 1 << f
                    switch (f, wt) {
                    case (1, 0):
                        // Known enum values only: an unknown one is SwiftProtobuf's to keep.
                        guard let v = sub.varint(), v <= 64, let k = MemoryTierKind(rawValue: Int(v)), k.rawValue == Int(v) else { return false }
                        if case .UNRECOGNIZED = k { return false }
                        tier.kind = k
                    case (2, 0): guard let v = sub.varint() else { return false }; tier.usedBytes = v
                    default: return false
                    }
                }
                t?.pointee.tiers.append(tier)
            case (5, 0): guard let v = r.varint(), v <= UInt64(UInt32.max) else { return false }; t?.pointee.renderSlotsUsed = UInt32(v)
            case (6, 0): guard let v = r.varint() else { return false }; t?.pointee.messagesSent = v
            case (7, 0): guard let v = r.varint() else { return false }; t?.pointee.messagesReceived = v
            default: return false
            }
        }
        return true
    }

    private static func decodeAck(_ r: inout Reader) -> HeartbeatAck? {
        var ack = HeartbeatAck()
        var seen: UInt32 = 0
        while !r.atEnd {
            guard let (field, wire) = r.tag(), field < 32 else { return nil }
            if field != 8 {
                guard seen & (1 << field) == 0 else { return nil }
                seen |= 1 << field
            }
            switch (field, wire) {
            case (1, 2): guard let s = r.string() else { return nil }; ack.nodeID = s
            case (2, 0): guard let v = r.varint() else { return nil }; ack.sequence = v
            case (3, 0): guard let v = r.varint() else { return nil }; ack.receivedAtUnixNanos = Int64(bitPattern: v)
            case (4, 0): guard let v = r.varint() else { return nil }; ack.sentAtUnixNanos = Int64(bitPattern: v)
            case (5, 0): guard let v = r.varint() else { return nil }; ack.coordinatorEpoch = v
            case (8, 2):
                guard var sub = r.submessage() else { return nil }
                var s = SettledReports()
                var fs = false
                while !sub.atEnd {
                    guard let (f, wt) = sub.tag() else { return nil }
                    switch (f, wt) {
                    case (1, 2): guard !fs, let v = sub.string() else { return nil }; fs = true; s.feature = v
                    case (2, 2): guard let v = sub.string() else { return nil }; s.keys.append(v)
                    default: return nil
                    }
                }
                ack.settled.append(s)
            default: return nil
            }
        }
        return ack
    }

    /// A cursor over a frame's bytes; every read checks bounds and returns nil past them.
    struct Reader {
        let p: UnsafeBufferPointer<UInt8>
        var i: Int
        let end: Int
        init(_ p: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) { self.p = p; i = start; self.end = end }
        var atEnd: Bool { i >= end }

        @inline(__always) mutating func varint() -> UInt64? {
            var v: UInt64 = 0
            var shift: UInt64 = 0
            while i < end {
                let b = p[i]; i += 1
                if shift == 63 && b > 1 { return nil }
                v |= UInt64(b & 0x7F) << shift
                if b < 0x80 { return v }
                shift += 7
                if shift > 63 { return nil }
            }
            return nil
        }
        /// Field number and wire type; nil for field 0 or a malformed tag.
        @inline(__always) mutating func tag() -> (Int, UInt64)? {
            guard let t = varint(), t >> 3 > 0, t >> 3 < 1 << 29 else { return nil }
            return (Int(t >> 3), t & 7)
        }
        @inline(__always) mutating func length() -> Int? {
            guard let n = varint(), n <= UInt64(end - i) else { return nil }
            return Int(n)
        }
        @inline(__always) mutating func submessage() -> Reader? {
            guard let n = length() else { return nil }
            defer { i += n }
            return Reader(p, i, i + n)
        }
        mutating func bytes() -> [UInt8]? {
            guard let n = length() else { return nil }
            defer { i += n }
            return Array(p[i..<(i + n)])
        }
        mutating func string() -> String? {
            guard let n = length() else { return nil }
            defer { i += n }
            let slice = UnsafeBufferPointer(rebasing: p[i..<(i + n)])
            // Node ids and names are ASCII: decode those without the generic validator, which
            // costs a conformance lookup per call; anything else is validated in full.
            var high: UInt8 = 0
            for b in slice { high |= b }
            if high < 0x80 { return String(decoding: slice, as: UTF8.self) }
            return String(validating: slice, as: UTF8.self)
        }
        @inline(__always) mutating func double() -> Double? {
            guard end - i >= 8 else { return nil }
            var bits: UInt64 = 0
            for k in 0..<8 { bits |= UInt64(p[i + k]) << (8 * UInt64(k)) }
            i += 8
            return Double(bitPattern: bits)
        }
    }
}
