import Cluster
import Foundation
import Testing

extension MultiProcess {
@Suite("Benchmark options")
struct BenchOptionTests {
    /// Runs `strato` with `arguments` to its end: its exit status and what it printed.
    static func strato(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let log = NSTemporaryDirectory() + "strato-bench-options-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log"
        defer { try? FileManager.default.removeItem(atPath: log) }
        return try TestCluster.runStrato(arguments, log: log)
    }

    @Test("a list option takes its values comma-separated, as its help shows the default, or spaced; a bad value is named")
    func listOptions() throws {
        for chunks in [["64,128"], ["64", "128"]] {
            let r = try Self.strato(["bench", "dataplane", "--mib", "1", "--repeats", "1", "--chunk-kib"] + chunks)
            #expect(r.status == 0, "\(chunks): \(r.output)")
            #expect(r.output.contains("\n64 KiB") && r.output.contains("\n128 KiB"), "a row for each chunk size given as \(chunks): \(r.output)")
        }
        let help = try Self.strato(["bench", "migration", "--help"])
        #expect(help.output.contains("256,1024,2048,4096,8192"), "\(help.output)")
        let bad = try Self.strato(["bench", "migration", "--lengths", "256,x"])
        #expect(bad.status != 0 && bad.output.contains("'256,x' is invalid for '--lengths"), "\(bad.output)")
        let outside = try Self.strato(["bench", "migration", "--lengths", "256,8"])
        #expect(outside.status != 0 && outside.output.contains("--lengths: 8 is outside"), "\(outside.output)")
        let zero = try Self.strato(["bench", "dataplane", "--chunk-kib", "0"])
        #expect(zero.status != 0 && zero.output.contains("--chunk-kib: 0 is outside"), "\(zero.output)")
    }
}
}
