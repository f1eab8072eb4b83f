import Foundation
import Scheduling
import Testing
@testable import Experiments

@Suite("Load balance across replicas (what migration could take away)")
struct ReplicaBalanceTests {
    /// `n` requests on `replica` arriving in minute `minute`, each with TTFT `ttft`.
    func rows(_ replica: String, minute: Int, ttft: Double, n: Int = 5) -> [ReplicaBalance.Row] {
        (0..<n).map { ReplicaBalance.Row(arrival: Double(minute) * 60 + Double($0) * 50 / Double(n), replica: replica, ttft: ttft) }
    }

    @Test("per minute, each replica's median TTFT and their spread; the tail's minute is the one holding the slowest 1 %")
    func knownAnswers() throws {
        var all: [ReplicaBalance.Row] = []
        // Minute 0: quick everywhere. Minute 1: a cluster-wide wait, replicas 2 s apart.
        all += rows("a", minute: 0, ttft: 0.2, n: 100) + rows("b", minute: 0, ttft: 0.3, n: 100)
        all += rows("a", minute: 1, ttft: 40) + rows("b", minute: 1, ttft: 42)
        // A replica with fewer than five requests in a minute is not compared.
        all += rows("c", minute: 1, ttft: 100, n: 4)
        let b = ReplicaBalance(all)
        #expect(b.windows.count == 2)
        let w1 = try #require(b.windows.last)
        #expect(w1.medianTTFT == ["a": 40, "b": 42])
        #expect(abs(w1.spread - 2) < 1e-9)
        #expect(abs(w1.clusterMedian - 42) < 1e-9, "the median over all 14 requests of minute 1 (5 at 40, 9 at 42 or more)")
        let tail = try #require(b.tail)
        #expect(tail.windows == 1 && abs(tail.spread - 2) < 1e-9)
        #expect(b.sentence.contains("differed by at most 2.00 s") && b.sentence.contains("whole cluster"), "\(b.sentence)")
        #expect(b.series.map(\.name) == ["a", "b"] && b.series[0].points.count == 2)
        // A replica missing from a window in between (drained, say) leaves a gap, not a bridge.
        let gap = ReplicaBalance(rows("a", minute: 0, ttft: 1) + rows("b", minute: 0, ttft: 1) + rows("b", minute: 1, ttft: 2) + rows("c", minute: 1, ttft: 2)
                                 + rows("a", minute: 2, ttft: 3) + rows("b", minute: 2, ttft: 3))
        let a = try #require(gap.series.first { $0.name == "a" })
        #expect(a.points.count == 3 && a.points[1].1.isNaN && a.points[1].0 == 1, "\(a.points)")
        var plot = SVGPlot(title: "t", xLabel: "x", yLabel: "y")
        plot.series = [SVGPlot.Series(name: "a", points: a.points)]
        let svg = plot.render()
        #expect(!svg.contains("nan") && svg.components(separatedBy: "<circle").count == 3, "two lone points either side of the gap are dots")
    }

    @Test("an uneven minute reads as load migration could balance; a single replica gives nothing to compare")
    func unevenAndAlone() {
        let uneven = ReplicaBalance(rows("a", minute: 3, ttft: 5) + rows("b", minute: 3, ttft: 30))
        #expect(uneven.tail.map { abs($0.spread - 25) < 1e-9 } == true)
        #expect(uneven.sentence.contains("unevenly loaded"), "\(uneven.sentence)")
        let alone = ReplicaBalance(rows("a", minute: 0, ttft: 5, n: 50))
        #expect(alone.windows.isEmpty && alone.tail == nil)
        #expect(alone.sentence.contains("too few"))
        #expect(ReplicaBalance([]).tail == nil)
        // Tens of milliseconds apart at a fraction of a second is no queue, whatever the ratio.
        let quick = ReplicaBalance(rows("a", minute: 0, ttft: 0.15) + rows("b", minute: 0, ttft: 0.3))
        #expect(quick.sentence.contains("without queueing"), "\(quick.sentence)")
    }

    @Test("the twin's requests.csv has the testbed's columns and reads back by name, per service; rows without a first token are left out")
    func csvRoundTrip() {
        let q = [
            RequestOutcome(id: "q1", serviceID: "s", arrival: 61, prefill: 10, decode: 5, replica: "r1", node: "n1", attempts: 1, finished: 70, latency: 9,
                           queued: 0.5, serviceSeconds: 8, ttft: 1.5, meanTBT: 0.1, maxTBT: 0.2, preemptions: 0),
            RequestOutcome(id: "q2", serviceID: "t", arrival: 62, prefill: 10, decode: 5, replica: "r2", node: "n2", attempts: 1, finished: 71, latency: 9,
                           queued: 0.5, serviceSeconds: 8, ttft: 2.5, meanTBT: 0.1, maxTBT: 0.2, preemptions: 1),
            RequestOutcome(id: "q3", serviceID: "s", arrival: 63, prefill: 10, decode: 5, replica: nil, node: nil, attempts: 0, finished: nil, latency: nil,
                           queued: 0, serviceSeconds: 0, ttft: nil, meanTBT: 0, maxTBT: 0, preemptions: 0),
        ]
        let csv = RequestsTable.csv(q)
        #expect(csv.hasPrefix(RequestsTable.header))
        #expect(csv.split(separator: "\n").count == 4)
        #expect(ReplicaBalance.rows(csv: csv) == [.init(arrival: 61, replica: "r1", ttft: 1.5), .init(arrival: 62, replica: "r2", ttft: 2.5)])
        #expect(ReplicaBalance.rows(csv: csv, service: "t") == [.init(arrival: 62, replica: "r2", ttft: 2.5)])
        #expect(ReplicaBalance.rows(csv: "no,header\n1,2").isEmpty)
    }
}
