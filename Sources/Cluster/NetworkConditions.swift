import Foundation

/// Network conditions between a node and the coordinator, emulated in Stratolab's own transport
/// (this kernel has no `netem`). They apply to each direction on its own: `delayMs` is one-way, so
/// a round trip takes twice as long; `loss` drops that fraction of messages in each direction;
/// `bandwidthBytesPerSecond` limits each direction (full duplex); `partitioned` drops everything.
///
/// As JSON (the control file) every key is optional and unknown keys are refused, so
/// `{"partitioned": true}` or `{"delayMs": 30, "bandwidth": "10mbit"}` are complete files.
public struct NetworkConditions: Codable, Equatable, Sendable, CustomStringConvertible {
    public var delayMs: Double
    public var jitterMs: Double
    /// Fraction of messages lost, 0…1.
    public var loss: Double
    /// nil: unlimited.
    public var bandwidthBytesPerSecond: Double?
    public var partitioned: Bool

    public init(delayMs: Double = 0, jitterMs: Double = 0, loss: Double = 0,
                bandwidthBytesPerSecond: Double? = nil, partitioned: Bool = false) {
        self.delayMs = delayMs
        self.jitterMs = jitterMs
        self.loss = loss
        self.bandwidthBytesPerSecond = bandwidthBytesPerSecond
        self.partitioned = partitioned
    }

    /// A perfect link: nothing emulated.
    public static let none = NetworkConditions()

    public var isNone: Bool { self == .none }

    /// An error in a user's text or file, quoting the value at fault.
    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    /// Checks the ranges: delay and jitter finite, 0…3,600,000 ms; loss 0…1; bandwidth > 0.
    public func validate() throws {
        for (name, v) in [("delay", delayMs), ("jitter", jitterMs)] where !(v.isFinite && v >= 0 && v <= 3_600_000) {
            throw ParseError("\(name) \(v) ms must be between 0 and 3600000 ms")
        }
        guard loss.isFinite && loss >= 0 && loss <= 1 else {
            throw ParseError("loss \(loss) must be between 0 and 1 (a fraction of messages)")
        }
        if let b = bandwidthBytesPerSecond, !(b.isFinite && b > 0) {
            throw ParseError("bandwidth \(b) bytes/s must be a positive number (leave it out for unlimited)")
        }
    }

    public var description: String {
        if isNone { return "none" }
        var parts: [String] = []
        if partitioned { parts.append("partitioned") }
        if delayMs > 0 || jitterMs > 0 {
            parts.append("delay \(Self.number(delayMs)) ms" + (jitterMs > 0 ? " ± \(Self.number(jitterMs)) ms" : ""))
        }
        if loss > 0 { parts.append("loss \(Self.number(loss * 100)) %") }
        if let b = bandwidthBytesPerSecond { parts.append(Self.formatBandwidth(b)) }
        return parts.joined(separator: ", ")
    }

    // MARK: Codable (every key optional, unknown keys refused)

    enum CodingKeys: String, CodingKey, CaseIterable {
        case delayMs, jitterMs, loss, bandwidthBytesPerSecond, partitioned
        /// Text form of the bandwidth (`"100mbit"`), accepted when decoding only.
        case bandwidth
    }

    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: Decoder) throws {
        let known = Set(CodingKeys.allCases.map(\.rawValue))
        for key in try decoder.container(keyedBy: AnyKey.self).allKeys where !known.contains(key.stringValue) {
            throw ParseError("unknown key '\(key.stringValue)'; expected: " + CodingKeys.allCases.map(\.rawValue).joined(separator: ", "))
        }
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init()
        delayMs = try c.decodeIfPresent(Double.self, forKey: .delayMs) ?? 0
        jitterMs = try c.decodeIfPresent(Double.self, forKey: .jitterMs) ?? 0
        loss = try c.decodeIfPresent(Double.self, forKey: .loss) ?? 0
        partitioned = try c.decodeIfPresent(Bool.self, forKey: .partitioned) ?? false
        bandwidthBytesPerSecond = try c.decodeIfPresent(Double.self, forKey: .bandwidthBytesPerSecond)
        if let text = try c.decodeIfPresent(String.self, forKey: .bandwidth) {
            guard bandwidthBytesPerSecond == nil else { throw ParseError("give either 'bandwidth' or 'bandwidthBytesPerSecond', not both") }
            bandwidthBytesPerSecond = try Self.parseBandwidth(text)
        }
        try validate()
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(delayMs, forKey: .delayMs)
        try c.encode(jitterMs, forKey: .jitterMs)
        try c.encode(loss, forKey: .loss)
        try c.encodeIfPresent(bandwidthBytesPerSecond, forKey: .bandwidthBytesPerSecond)
        try c.encode(partitioned, forKey: .partitioned)
    }

    /// Reads the JSON of a control file; errors say what is wrong in a line.
    public static func decodeJSON(_ data: Data) throws -> NetworkConditions {
        do {
            return try JSONDecoder().decode(NetworkConditions.self, from: data)
        } catch let e as ParseError {
            throw e
        } catch DecodingError.typeMismatch(let type, let context), DecodingError.valueNotFound(let type, let context) {
            let key = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw ParseError("'\(key)' must be \(type == Bool.self ? "true or false" : type == String.self ? "a string" : "a number")")
        } catch DecodingError.dataCorrupted(let context) {
            let underlying = (context.underlyingError as NSError?)?.localizedDescription ?? context.debugDescription
            throw ParseError("not valid JSON: \(underlying)")
        } catch {
            throw ParseError("not valid JSON: \(error)")
        }
    }

    // MARK: Parsing what a user types

    /// A rate: bits per second as `100mbit`, `1gbit`, `512kbit`, `10Mb/s`; bytes per second as
    /// `10MB/s`, `1.5GB/s`, `64KiB/s`, `500B/s`. `unlimited` (or `none`) gives nil. Prefixes are
    /// decimal except Ki/Mi/Gi. `mbps`-style units are refused: they mean bits to some and bytes to others.
    public static func parseBandwidth(_ text: String) throws -> Double? {
        let t = text.trimmingCharacters(in: .whitespaces)
        if ["unlimited", "none"].contains(t.lowercased()) { return nil }
        let hint = "expected a rate such as 100mbit, 1gbit, 10Mb/s (bits) or 10MB/s, 64KiB/s (bytes), or 'unlimited'"
        let (number, unit) = split(t)
        guard let value = number else { throw ParseError("bandwidth '\(text)' is not understood: \(hint)") }
        guard !unit.isEmpty else { throw ParseError("bandwidth '\(text)' needs a unit: \(hint)") }
        if unit.lowercased().hasSuffix("bps") {
            let n = t.prefix { $0.isNumber || $0 == "." }, p = unit.dropLast(3)
            throw ParseError("bandwidth '\(text)' is ambiguous (bits or bytes per second?): write \(n)\(p.lowercased())bit for bits or \(n)\(p.uppercased())B/s for bytes")
        }
        func prefix(_ p: Substring) -> Double? {
            switch p {
            case "": return 1
            case "k", "K": return 1e3
            case "m", "M": return 1e6
            case "g", "G": return 1e9
            case "t", "T": return 1e12
            case "Ki", "ki", "KI": return 1024
            case "Mi", "mi", "MI": return 1024 * 1024
            case "Gi", "gi", "GI": return 1024 * 1024 * 1024
            default: return nil
            }
        }
        var bytesPerSecond: Double?
        let lower = unit.lowercased()
        if lower.hasSuffix("bit") || lower.hasSuffix("bit/s") {
            let p = unit.dropLast(lower.hasSuffix("/s") ? 5 : 3)
            if let m = prefix(p) { bytesPerSecond = value * m / 8 }
        } else if unit.hasSuffix("B/s") {
            if let m = prefix(unit.dropLast(3)) { bytesPerSecond = value * m }
        } else if unit.hasSuffix("b/s") {
            if let m = prefix(unit.dropLast(3)) { bytesPerSecond = value * m / 8 }
        }
        guard let b = bytesPerSecond else { throw ParseError("bandwidth '\(text)' has an unknown unit '\(unit)': \(hint)") }
        guard b.isFinite && b > 0 else { throw ParseError("bandwidth '\(text)' must be more than zero (or 'unlimited')") }
        return b
    }

    /// A duration in milliseconds: `20ms`, `1.5s`, `250us`, or a bare number of milliseconds.
    public static func parseDuration(_ text: String, what: String = "duration") throws -> Double {
        let seconds = try parseSeconds(text, bareUnitSeconds: 0.001, what: what,
                                       expected: "milliseconds such as 20, 20ms, 1.5s or 250us")
        guard seconds <= 3600 else { throw ParseError("\(what) '\(text)' must be between 0 and 1 hour") }
        return seconds * 1000
    }

    /// The one duration parser: `250us`, `20ms`, `1.5s`, `2m`, `1h`, or a bare number in
    /// `bareUnitSeconds` (0.001 for milliseconds, 1 for seconds). Never negative, always finite.
    public static func parseSeconds(_ text: String, bareUnitSeconds: Double, what: String = "duration",
                                    expected: String = "a duration such as 30s, 2m, 1h or 1500ms") throws -> Double {
        let t = text.trimmingCharacters(in: .whitespaces)
        let (number, unit) = split(t)
        let scale: Double?
        switch unit.lowercased() {
        case "": scale = bareUnitSeconds
        case "us", "µs": scale = 1e-6
        case "ms": scale = 1e-3
        case "s": scale = 1
        case "m", "min": scale = 60
        case "h": scale = 3600
        default: scale = nil
        }
        if t.hasPrefix("-") { throw ParseError("\(what) '\(text)' must not be negative") }
        guard let v = number, let s = scale, (v * s).isFinite else { throw ParseError("\(what) '\(text)' is not understood: expected \(expected)") }
        return v * s
    }

    /// A loss fraction: `0.01` or `1%`.
    public static func parseLoss(_ text: String) throws -> Double {
        let t = text.trimmingCharacters(in: .whitespaces)
        let percent = t.hasSuffix("%")
        guard let v = Double(percent ? String(t.dropLast()).trimmingCharacters(in: .whitespaces) : t), v.isFinite else {
            throw ParseError("loss '\(text)' is not understood: expected a fraction 0…1 such as 0.01, or a percentage such as 1%")
        }
        let fraction = percent ? v / 100 : v
        guard fraction >= 0 && fraction <= 1 else {
            throw ParseError("loss '\(text)' must be between 0 and 1 (0 % and 100 %)")
        }
        return fraction
    }

    /// A rate as text that `parseBandwidth` reads back exactly (`100000000bit`, or bytes when the
    /// rate is not a whole number of bits).
    public static func bandwidthArgument(_ bytesPerSecond: Double) -> String {
        let bits = bytesPerSecond * 8
        if bits == bits.rounded() && bits < 1e18 { return "\(Int64(bits))bit" }
        return "\(bytesPerSecond)B/s"
    }

    /// A rate for people: `100 Mbit/s`.
    public static func formatBandwidth(_ bytesPerSecond: Double) -> String {
        let bits = bytesPerSecond * 8
        for (scale, name) in [(1e12, "Tbit/s"), (1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s")] where bits >= scale {
            return "\(number(bits / scale)) \(name)"
        }
        return "\(number(bits)) bit/s"
    }

    static func number(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e15 { return "\(Int64(v))" }
        return String(format: "%.3g", v)
    }

    /// Splits `12.5mbit` into 12.5 and `mbit` (the number nil when there is none or it is malformed).
    private static func split(_ t: String) -> (Double?, String) {
        let numberPart = t.prefix { $0.isNumber || $0 == "." }
        let unit = t.dropFirst(numberPart.count).trimmingCharacters(in: .whitespaces)
        guard !numberPart.isEmpty, numberPart.allSatisfy({ $0.isASCII }), let v = Double(numberPart), v.isFinite else {
            return (nil, unit)
        }
        return (v, unit)
    }
}
