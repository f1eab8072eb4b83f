import Foundation

/// One request of the Mooncake trace (FAST '25 release, Kimi's conversation traffic): arrival,
/// token counts and the hashes of its prompt's 512-token blocks. Equal leading hashes mean a
/// shared prefix (a multi-turn session, a common system prompt).
public struct MooncakeRequest: Sendable, Equatable {
    /// Seconds from the trace's start.
    public var arrival: Double
    public var inputTokens: Int
    public var outputTokens: Int
    public var hashIDs: [Int]
}

/// Reads `conversation_trace.jsonl`: one JSON object per line with `timestamp` (ms), `input_length`,
/// `output_length` and `hash_ids`. Errors name the file, the line and the field, like the other
/// readers; blank lines are skipped.
public enum MooncakeTrace {
    /// Tokens per hash block in the release.
    public static let blockTokens = 512

    public static func read(file: String, limit: Int? = nil) throws -> [MooncakeRequest] {
        guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
            throw DataError(file: file, line: 0, field: "(file)", message: "cannot read the file")
        }
        return try parse(text, file: file, limit: limit)
    }

    public static func parse(_ text: String, file: String, limit: Int? = nil) throws -> [MooncakeRequest] {
        var out: [MooncakeRequest] = []
        var lastArrival = -Double.infinity
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if let limit, out.count >= limit { break }
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            let n = i + 1
            guard let obj = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
                throw DataError(file: file, line: n, field: "(line)", message: "not a JSON object")
            }
            func number(_ key: String) throws -> Double {
                guard let v = obj[key] else { throw DataError(file: file, line: n, field: key, message: "missing") }
                guard let d = (v as? NSNumber)?.doubleValue, d.isFinite else { throw DataError(file: file, line: n, field: key, message: "not a number: \(v)") }
                return d
            }
            let ts = try number("timestamp")
            let input = try number("input_length"), output = try number("output_length")
            guard ts >= 0 else { throw DataError(file: file, line: n, field: "timestamp", message: "negative (\(ts))") }
            guard ts >= lastArrival else { throw DataError(file: file, line: n, field: "timestamp", message: "goes back in time (\(ts) after \(lastArrival))") }
            guard input >= 1, input == input.rounded(), input <= 10_000_000 else { throw DataError(file: file, line: n, field: "input_length", message: "must be a whole number of tokens ≥ 1 (got \(input))") }
            guard output >= 0, output == output.rounded(), output <= 10_000_000 else { throw DataError(file: file, line: n, field: "output_length", message: "must be a whole number of tokens ≥ 0 (got \(output))") }
            guard let hashes = obj["hash_ids"] as? [Any] else { throw DataError(file: file, line: n, field: "hash_ids", message: "missing or not a list") }
            var ids: [Int] = []
            for h in hashes {
                guard let v = (h as? NSNumber)?.intValue, v >= 0 else { throw DataError(file: file, line: n, field: "hash_ids", message: "not a non-negative integer: \(h)") }
                ids.append(v)
            }
            let blocks = (Int(input) + blockTokens - 1) / blockTokens
            guard ids.count == blocks else {
                throw DataError(file: file, line: n, field: "hash_ids", message: "\(ids.count) hashes for \(Int(input)) tokens (expected \(blocks), one per \(blockTokens)-token block)")
            }
            lastArrival = ts
            out.append(MooncakeRequest(arrival: ts / 1000, inputTokens: Int(input), outputTokens: Int(output), hashIDs: ids))
        }
        guard !out.isEmpty else { throw DataError(file: file, line: 1, field: "(file)", message: "no requests") }
        return out
    }
}

/// Keys of a prompt's KV chunks for the block stores: chunk i's key hashes chunk i's content id
/// with chunk i−1's key, so one key names its whole prefix (as LMCache's chunk hashes do) and the
/// longest cached prefix is found by looking keys up in order.
public enum PrefixKeys {
    /// FNV-1a over the previous key's hash and this chunk's id.
    public static func chain(_ ids: [Int], model: String) -> [String] {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        var out: [String] = []
        out.reserveCapacity(ids.count)
        for id in ids {
            var x = UInt64(bitPattern: Int64(id))
            for _ in 0..<8 { h = (h ^ (x & 0xff)) &* 0x0000_0100_0000_01b3; x >>= 8 }
            out.append("kv/\(model)/" + String(h, radix: 16))
        }
        return out
    }

    /// Which of `count` memory hosts (sorted by name) owns a prefix: by its first chunk's key, so
    /// every agent (and the twin) asks the same one.
    public static func owner(of firstKey: String, among count: Int) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in firstKey.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        return Int(h % UInt64(max(1, count)))
    }

    /// How many leading chunks of `ids` `held` (a set of chained keys) holds.
    public static func cachedPrefix(_ keys: [String], held: Set<String>) -> Int {
        var n = 0
        while n < keys.count, held.contains(keys[n]) { n += 1 }
        return n
    }
}
