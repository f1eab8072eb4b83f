import Foundation
import Scheduling
import Testing

@Suite("Mooncake trace and prefix keys")
struct MooncakeTraceTests {
    @Test func readsTheSharedTraceWithItsSharedPrefixes() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../data/inference/mooncake/conversation_trace.jsonl").standardized.path
        let r = try MooncakeTrace.read(file: file)
        #expect(r.count == 12_031)
        #expect(r[0].inputTokens == 6758 && r[0].outputTokens == 500 && r[0].hashIDs.count == 14)
        // The first requests share block 0 (a common system prompt).
        #expect(r[1].hashIDs[0] == r[0].hashIDs[0])
        let mean = Double(r.map(\.inputTokens).reduce(0, +)) / Double(r.count)
        #expect(abs(mean - 12_035) < 5)
        #expect(r.last!.arrival > 3000 && r.last!.arrival <= 3700)
    }

    @Test func badLinesAreNamedByLineAndField() {
        func error(_ text: String) -> String {
            do { _ = try MooncakeTrace.parse(text, file: "t.jsonl"); return "" } catch { return "\(error)" }
        }
        #expect(error("{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}\nnot json") == "t.jsonl:2: (line): not a JSON object")
        #expect(error("{\"timestamp\": 0, \"output_length\": 1, \"hash_ids\": [1]}").contains("t.jsonl:1: input_length: missing"))
        #expect(error("{\"timestamp\": 0, \"input_length\": 1000, \"output_length\": 1, \"hash_ids\": [1]}").contains("1 hashes for 1000 tokens (expected 2"))
        #expect(error("{\"timestamp\": 5, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}\n{\"timestamp\": 4, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}").contains(":2: timestamp: goes back in time"))
        #expect(error("{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [-1]}").contains("hash_ids: not a non-negative integer"))
        #expect(error("\n\n").contains("no requests"))
    }

    @Test func chainedKeysNameTheWholePrefix() {
        let a = PrefixKeys.chain([0, 1, 2, 3], model: "m"), b = PrefixKeys.chain([0, 1, 9, 3], model: "m")
        #expect(a[0] == b[0] && a[1] == b[1])
        // Same chunk id after a different prefix: a different key.
        #expect(a[2] != b[2] && a[3] != b[3])
        #expect(PrefixKeys.chain([0], model: "other")[0] != a[0])
        #expect(PrefixKeys.cachedPrefix(b, held: Set(a)) == 2)
        #expect(Set(a).count == 4 && a[0].hasPrefix("kv/m/"))
    }
}
