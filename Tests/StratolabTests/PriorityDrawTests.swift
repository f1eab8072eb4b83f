@testable import Experiments
import Testing

@Suite("High-priority draw")
struct PriorityDrawTests {
    /// A share of the requests drawn high priority must be spread over the run: the migration
    /// policies keep headroom per high-priority request, so runs of them bunched together would
    /// decide when and how often requests move.
    @Test("the share holds overall and in every stretch of consecutive requests, differs by seed, and 0 and 1 are exact")
    func spread() {
        let ids = (0..<5000).map { "llama2-7b-conv-q\($0)" }
        for seed: UInt64 in [1, 2, 7] {
            let drawn = ids.map { ExperimentRunner.isHighPriority($0, seed: seed, share: 0.1) }
            let share = Double(drawn.filter { $0 }.count) / Double(ids.count)
            #expect(abs(share - 0.1) < 0.015, "seed \(seed): \(share) drawn")
            // Each 250 consecutive requests holds about 25 (binomial sd 4.7): never none, never most.
            for start in stride(from: 0, to: ids.count, by: 250) {
                let n = drawn[start..<start + 250].filter { $0 }.count
                #expect((8...45).contains(n), "seed \(seed), requests \(start)…\(start + 249): \(n) high priority")
            }
        }
        let a = ids.map { ExperimentRunner.isHighPriority($0, seed: 1, share: 0.1) }
        let b = ids.map { ExperimentRunner.isHighPriority($0, seed: 2, share: 0.1) }
        #expect(a != b)
        #expect(ids.allSatisfy { !ExperimentRunner.isHighPriority($0, seed: 1, share: 0) })
        #expect(ids.allSatisfy { ExperimentRunner.isHighPriority($0, seed: 1, share: 1) })
    }
}
