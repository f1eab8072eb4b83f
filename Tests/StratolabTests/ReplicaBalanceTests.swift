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

@Suite("High-priority requests against the others")
struct PriorityClassesTests {
    @Test("each class's count and percentiles (interpolated, as every run figure), unanswered requests left out, read by column name from both CSVs; nothing to compare without a high-priority request")
    func classes() throws {
        let csv = """
        request_id,service_id,arrival_s,prefill_tokens,decode_tokens,finished_s,latency_s,queued_s,service_s,replica,node,attempts,ttft_s,mean_tbt_s,max_tbt_s,preemptions,high_priority
        a,s,1,10,5,9,8,0,8,r1,n1,1,0.5,0.02,0.05,0,yes
        b,s,2,10,5,9,7,0,7,r1,n1,1,1.5,0.04,0.30,0,yes
        c,s,3,10,5,9,6,0,6,r2,n2,1,4.0,0.10,2.00,1,no
        d,s,4,10,5,9,5,0,5,r2,n2,1,2.0,0.03,0.10,0,no
        e,s,5,10,5,-1,-1,0,0,,,0,-1,0,0,0,yes
        """
        let p = try #require(PriorityClasses(PriorityClasses.rows(csv: csv)))
        #expect(p.high.requests == 2 && p.normal.requests == 2, "the unanswered one is left out")
        // Two values: p50 halfway, p99 99 % of the way from the lower to the higher.
        #expect(abs(p.high.ttftP50 - 1.0) < 1e-9 && abs(p.high.ttftP99 - 1.49) < 1e-9 && abs(p.high.tbtP99 - 0.0398) < 1e-9 && abs(p.high.maxTBTP99 - 0.2975) < 1e-9)
        #expect(abs(p.normal.ttftP50 - 3.0) < 1e-9 && abs(p.normal.ttftP99 - 3.98) < 1e-9 && abs(p.normal.maxTBTP99 - 1.981) < 1e-9)
        #expect(p.sentence.hasPrefix("high priority 2: TTFT p50 1.00 s, p99 1.49 s; TBT p99 40 ms"), "\(p.sentence)")
        // The twin's CSV carries the same column.
        var o = RequestOutcome(id: "x", serviceID: "s", arrival: 1, prefill: 10, decode: 5, replica: "r1", node: "n1", attempts: 1, finished: 3, latency: 2,
                               queued: 0, serviceSeconds: 2, ttft: 0.25, meanTBT: 0.02, maxTBT: 0.04, preemptions: 0)
        o.highPriority = true
        let twin = PriorityClasses.rows(csv: RequestsTable.csv([o]))
        #expect(twin == [PriorityClasses.Row(highPriority: true, ttft: 0.25, meanTBT: 0.02, maxTBT: 0.04)])
        // No high-priority request, or a CSV from before the column: nothing to compare.
        #expect(PriorityClasses(PriorityClasses.rows(csv: csv.replacingOccurrences(of: ",yes", with: ",no"))) == nil)
        #expect(PriorityClasses.rows(csv: csv.replacingOccurrences(of: ",high_priority", with: "")).isEmpty)
    }
}

@Suite("Policies' comparison table")
struct ComparisonColumnTests {
    @Test("a cell shorter than its column is padded to it; a longer one keeps a space before the next column")
    func column() {
        #expect(ExperimentComparison.column("4 (4 drain)", 15) == "4 (4 drain)    ")
        let long = "47 (1 balance, 42 make-room, 4 priority)"
        #expect(ExperimentComparison.column(long, 39) == long + " ")
        #expect(ExperimentComparison.column(long, 39) + "yes" == long + " yes")
    }
}
