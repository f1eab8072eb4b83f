import Foundation
import Testing
@testable import Experiments
import Features
import Scheduling

@Suite("Policy comparison over repeated runs")
struct PolicyComparisonTests {
    func run(_ policy: String, seed: UInt64, p99: Double, preemptions: Double = 0, migrations: Double = 0, lost: Bool = false) -> ExperimentComparison.Row {
        var r = ExperimentComparison.Row(policy: policy, seed: seed)
        r.ttftP99 = p99; r.ttftP50 = p99 / 10; r.preemptions = preemptions; r.migrations = migrations
        r.reasons = migrations > 0 ? ["make-room": migrations] : [:]
        r.completed = 100; r.submitted = 100; r.lostNothing = !lost
        return r
    }

    @Test("a policy's runs become one row of means, with P99 TTFT's range; one lost request in any run shows")
    func means() throws {
        let runs = [run("slack", seed: 1, p99: 12, preemptions: 11, migrations: 40), run("slack", seed: 2, p99: 15, preemptions: 14, migrations: 45),
                    run("slack", seed: 3, p99: 18, preemptions: 9, migrations: 50, lost: true)]
        let m = ExperimentComparison.mean(runs)
        #expect(m.runs == 3 && m.ttftP99 == 15 && m.ttftP50 == 1.5)
        #expect(m.ttftP99Range == 12...18)
        #expect(abs(m.preemptions - 34.0 / 3) < 1e-9 && m.migrations == 45 && m.reasons == ["make-room": 45])
        #expect(m.completed == 300 && m.submitted == 300 && !m.lostNothing)
        #expect(ExperimentComparison.count(45) == "45" && ExperimentComparison.count(34.0 / 3) == "11.3")
        let groups = ExperimentComparison.byPolicy([run("none", seed: 1, p99: 1), run("slack", seed: 1, p99: 2), run("none", seed: 2, p99: 3)])
        #expect(groups.map(\.policy) == ["none", "slack"] && groups[0].runs.map(\.seed) == [1, 2])
    }

    @Test("the best policy against none: ratio of means, run by run on the same seeds, and whether it holds beyond the spread")
    func verdicts() throws {
        func lines(_ best: [Double], _ none: [Double], bestSeeds: [UInt64] = [1, 2, 3]) -> [String] {
            ExperimentComparison.overRuns(best: ("slack", zip(bestSeeds, best).map { run("slack", seed: $0, p99: $1) }),
                                          none: ("none", none.enumerated().map { run("none", seed: UInt64($0 + 1), p99: $1) }), what: "migration")
        }
        // Every slack run below every none run.
        let clear = lines([10, 11, 12], [15, 16, 17])
        #expect(clear[0].contains("11.00 s vs 16.00 s, ratio 0.69"), "\(clear)")
        #expect(clear[1].contains("0.67 (seed 1), 0.69 (seed 2), 0.71 (seed 3); below 1 in 3 of 3"), "\(clear)")
        #expect(clear[2].contains("every slack run beat every none run"), "\(clear)")
        // Overlapping ranges, better in two pairs of three: not shown.
        let noisy = lines([13.93, 15.29, 14.60], [18.28, 13.60, 16.80])
        #expect(noisy[1].contains("below 1 in 2 of 3") && noisy[2].contains("the ranges overlap: not shown beyond the run-to-run spread"), "\(noisy)")
        // Overlapping ranges, but better in every pair (the seeds differ in load).
        let paired = lines([9, 14, 19], [10, 15, 20])
        #expect(paired[2].contains("the ranges overlap, but it helped in every pair of runs"), "\(paired)")
        // Worse everywhere.
        #expect(lines([20, 21, 22], [10, 11, 12])[2].contains("every none run beat every slack run"))
        // Different seeds: no pairing, ranges only.
        let unpaired = lines([9, 14, 19], [10, 15, 20], bestSeeds: [4, 5, 6])
        #expect(unpaired.count == 2 && unpaired[1].contains("not shown beyond the run-to-run spread"), "\(unpaired)")
        // One run each: the single-run headline stands alone.
        #expect(ExperimentComparison.overRuns(best: ("slack", [run("slack", seed: 1, p99: 1)]), none: ("none", [run("none", seed: 1, p99: 2)]), what: "migration").isEmpty)
    }

    @Test("--repetitions and --policies override a spec; a policy the spec does not compare is named")
    func overrides() throws {
        let body = "name: t\ntopology: migration-topology.yaml\nseeds: [5]\nworkload: {kind: services, services: {rps: 1, gpu: A40, migration: [none, dispatch, llumnix, slack]}}\n"
        var s = try ExperimentSpec.parse(body, file: "t.yaml", baseDirectory: ExperimentSpecTests.repo + "/experiments")
        try s.override(repetitions: 3, policies: ["none", "slack"])
        #expect(s.repetitions == 3 && s.seeds == [5, 6, 7])
        #expect(s.variants == ["none", "slack"] && s.topology.coordinator.migrationPolicy == "none")
        var t = try ExperimentSpec.parse(body, file: "t.yaml", baseDirectory: ExperimentSpecTests.repo + "/experiments")
        #expect(throws: SpecError.self) { try t.override(repetitions: 0, policies: nil) }
        do { try t.override(repetitions: nil, policies: ["none", "fastest"]); Issue.record("accepted an unknown policy") } catch let e as SpecError {
            #expect("\(e)".contains("fastest not compared by this spec") && "\(e)".contains("none, dispatch, llumnix, slack"), "\(e)")
        }
        #expect(throws: SpecError.self) { try t.override(repetitions: nil, policies: ["none", "none"]) }
        #expect(t.variants.count == 4, "a refused override changes nothing")
    }

    @Test("--seeds: lists and ranges read in order, each seed run --repetitions times; bad lists are named")
    func seedLists() throws {
        #expect(try ExperimentSpec.parseSeeds("4") == [4])
        #expect(try ExperimentSpec.parseSeeds("1-3, 7") == [1, 2, 3, 7])
        #expect(try ExperimentSpec.parseSeeds("6,2") == [6, 2])
        for (text, why) in [("", "an empty item"), ("1,,2", "an empty item"), ("3-1", "runs backwards"), ("1-x", "not a seed"),
                            ("2,1-3", "seed 2 is named twice"), ("1-500", "over 100 seeds"), ("-1", "not a seed")] {
            do { _ = try ExperimentSpec.parseSeeds(text); Issue.record("accepted '\(text)'") } catch let e as ExperimentSpec.SeedListError {
                #expect(e.description.contains(why) && e.description.hasPrefix("--seeds '\(text)'"), "\(e)")
            }
        }
        let body = "name: t\ntopology: migration-topology.yaml\nseeds: [5]\nworkload: {kind: services, services: {rps: 1, gpu: A40, migration: [none, llumnix]}}\n"
        var s = try ExperimentSpec.parse(body, file: "t.yaml", baseDirectory: ExperimentSpecTests.repo + "/experiments")
        try s.override(repetitions: 2, policies: nil, seeds: [4, 9])
        #expect(s.seeds == [4, 4, 9, 9] && s.repetitions == 4)
        var t = try ExperimentSpec.parse(body, file: "t.yaml", baseDirectory: ExperimentSpecTests.repo + "/experiments")
        try t.override(repetitions: nil, policies: nil, seeds: [2, 3])
        #expect(t.seeds == [2, 3] && t.repetitions == 2)
        #expect(throws: SpecError.self) { try t.override(repetitions: 40, policies: nil, seeds: [1, 2, 3]) }
    }

    @Test("a seed axis has whole-number ticks only: one per seed for a few, a 2-5-10 step for many")
    func seedAxisTicks() {
        #expect(SVGPlot.wholeTicks(from: 0.5, to: 4.5) == [1, 2, 3, 4])
        #expect(SVGPlot.wholeTicks(from: 0.5, to: 1.5) == [1])
        #expect(SVGPlot.wholeTicks(from: 0.5, to: 30.5) == [1, 6, 11, 16, 21, 26])
        #expect(SVGPlot.wholeTicks(from: 0.2, to: 0.8).isEmpty)
        var plot = SVGPlot(title: "t", xLabel: "seed", yLabel: "y")
        plot.xMargin = 0.5; plot.wholeNumberX = true
        plot.series = [SVGPlot.Series(name: "a", points: [(1, 3), (2, 4), (3, 5)], dots: true)]
        let svg = plot.render()
        #expect(svg.contains(">2</text>") && !svg.contains(">1.4</text>") && !svg.contains(">2.6</text>"))
    }

    @Test("seed by seed: each seed's testbed mean against its twin run, the errors' spread and on which side the twin falls")
    func seedBySeed() {
        let v = SeedBySeed(rows: [
            .init(seed: 1, figure: "p99", testbed: [10, 12], twin: 8.8),     // mean 11: 20 % below
            .init(seed: 2, figure: "p99", testbed: [20], twin: 21),          // 5 % above
            .init(seed: 3, figure: "p99", testbed: [10], twin: 10),          // 0 %
            .init(seed: 1, figure: "migrations", testbed: [0], twin: 0),     // both none: no error
            .init(seed: 2, figure: "migrations", testbed: [40], twin: 50),   // 25 % above
        ])
        #expect(v.figures == ["p99", "migrations"])
        let p = v.errorSpread("p99")!
        #expect(abs(p.low) < 1e-12 && abs(p.median - 0.05) < 1e-12 && abs(p.high - 0.2) < 1e-12)
        #expect(v.sides("p99") == (above: 1, below: 1))
        #expect(v.errorSpread("migrations")!.high == 0.25 && v.sides("migrations") == (above: 1, below: 0))
        #expect(v.text.contains("(10.00, 12.00)") && v.text.contains("20.0%"), "\(v.text)")
        #expect(v.text.contains("p99: seed by seed the twin errs by 0.0–20.0 % (median 5.0 %); above the testbed on 1 seed(s), below on 1"), "\(v.text)")
        // Several twin runs of a seed (timing jitter): their mean is the twin's figure, all listed.
        let j = SeedBySeed(rows: [.init(seed: 1, figure: "migrations", testbed: [10], twinRuns: [11, 13, 12])])
        #expect(j.rows[0].twin == 12 && abs(j.rows[0].error - 0.2) < 1e-12)
        #expect(j.text.contains("(testbed runs | twin runs)") && j.text.contains("(10.00 | 11.00, 13.00, 12.00)"), "\(j.text)")
    }

    @Test("migrations.csv: the request moved and why an abort happened, quoted where the reason holds a comma; the twin's rows the same")
    func migrationsTable() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("migtable-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var a = MigrationOutcome(id: "mig-1", request: "q7", from: "gpu-0", to: "gpu-1", reason: "make-room", state: "aborted", tokens: 3000, stages: 0, started: 1)
        a.ended = 1; a.detail = MigrationAbort.destinationFull("needs 5 blocks, 2 free").description
        var b = MigrationOutcome(id: "mig-2", request: "q8", from: "gpu-1", to: "gpu-0", reason: "balance", state: "done", tokens: 100, stages: 2, started: 2)
        b.ended = 2.5; b.downtime = 0.01
        try MigrationsTable.write(twin: [a, b], method: "live", to: dir + "/m.csv")
        let lines = try String(contentsOfFile: dir + "/m.csv", encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(lines[0] == "migration,request,from,to,method,reason,state,tokens,stages,bytes,downtime_ms,started_trace_s,ended_trace_s,staged,why")
        #expect(lines[1] == "mig-1,q7,gpu-0,gpu-1,live,make-room,aborted,3000,0,0,,1.000,1.000,no,\"destination has no room: needs 5 blocks, 2 free\"", "\(lines[1])")
        #expect(lines[2] == "mig-2,q8,gpu-1,gpu-0,live,balance,done,100,2,0,10.000,2.000,2.500,no,", "\(lines[2])")
    }

    @Test("a comparison folder's run folders are found as the runner names them")
    func runFolders() {
        func summary(_ policy: String, _ seed: UInt64) -> ExperimentSummary {
            var s = ExperimentSummary(name: "t", seed: seed, platform: "local", startedAt: Date(timeIntervalSince1970: 0))
            s.migrationPolicy = policy
            return s
        }
        let repeated = [summary("none", 1), summary("none", 2), summary("slack", 1), summary("slack", 2)]
        #expect(ExperimentComparison.runDirectories(repeated, in: "r") == ["r/none/run-1-seed-1", "r/none/run-2-seed-2", "r/slack/run-1-seed-1", "r/slack/run-2-seed-2"])
        #expect(ExperimentComparison.runDirectories([summary("none", 1), summary("slack", 1)], in: "r") == ["r/none", "r/slack"])
        #expect(ExperimentComparison.runDirectories([summary("slack", 4), summary("slack", 5)], in: "r") == ["r/run-1-seed-4", "r/run-2-seed-5"])
    }
}
