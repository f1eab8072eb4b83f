import Cluster
import Experiments
import Foundation
import Protocol
import Testing

/// Whole experiments on local processes: a spec with a fault timeline runs end to end, and the
/// lost-nothing check and the merged trace are checked from the results folder.
extension MultiProcess {
@Suite("Experiments end to end")
struct ExperimentTests {
    @Test("a fault timeline (kill, pause, partition, slow, coordinator crash) during a workload loses nothing, and the merged trace shows it")
    func faultTimeline() throws {
        let dir = NSTemporaryDirectory() + "strato-exp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let yaml = """
            name: it-faults
            topology:
              name: it-faults
              security: open
              coordinator: {endpoint: "ipc://\(dir)/control.sock"}
              nodes:
                - {id: gpu-a, kind: gpu, site: cloud, gpu: {model: A100-80GB, count: 4}}
                - {id: gpu-b, kind: gpu, site: cloud, gpu: {model: A100-80GB, count: 4}}
                - {id: gpu-v, kind: gpu, site: cloud, gpu: {model: V100, count: 4}}
                - {id: mem-a, kind: memory, site: cloud, tiers: [dram:64MiB]}
                - {id: render-e, kind: render, site: {name: edge-1, kind: edge}, render: {slots: 4, gpu: L4}}
            workload: {kind: scheduling, jobs_per_hour: 16, hours: 1, max_jobs: 14}
            policy: db-fifo
            time_scale: 2000
            end: jobs_done
            duration: 150s
            seeds: [3]
            faults:
              - {at: 1s, action: kill, target: gpu-v, for: 4s}
              - {at: 1500ms, action: pause, target: mem-a, for: 3s}
              - {at: 2s, action: partition, target: site:edge-1, for: 4s}
              - {at: 3s, action: slow, target: gpu-b, for: 3s, cpu: 0.4, latency_ms: 10}
              - {at: 7s, action: crash_coordinator, for: 2s}
            tracing: {heartbeat_sample: 2}
            """
        let file = dir + "/spec.yaml"
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        let spec = try ExperimentSpec.load(file: file)
        let platform = LocalPlatform(runDirectory: dir + "/run", executable: TestCluster.stratoBinary)
        let runner = ExperimentRunner(spec: spec, platform: platform, out: dir + "/results")
        var lines: [String] = []
        runner.print = { lines.append($0) }
        let summaries = try runner.runAll()
        let s = try #require(summaries.first)
        let log = lines.joined(separator: "\n")

        // Every fault applied and healed; every job accounted for and finished; nothing missing.
        #expect(s.faultsApplied == 5 && s.faultsHealed == 5, "\(log)")
        #expect(s.jobs.submitted == 14 && s.jobs.finished == 14 && s.jobs.lost.isEmpty, "\(s.jobs)\n\(log)")
        #expect(s.lostNothing.ok, "\(s.lostNothing.lines)\n\(log)")
        #expect(s.trace.missingEvents == 0 && s.trace.nodesWithoutTrace.isEmpty)
        #expect(s.nodesAliveAtEnd == 5)
        #expect(log.contains("lost-nothing check: PASSED"))
        #expect(log.contains("[") && log.contains("nodes") && log.contains("faults 5/5 applied"))   // live progress lines

        // The merged trace: valid Chrome JSON, one named process per node, message flows, fault windows.
        let out = dir + "/results"
        let json = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/trace.json"))) as? [String: Any])
        let events = try #require(json["traceEvents"] as? [[String: Any]])
        let processes = Set(events.filter { $0["ph"] as? String == "M" && $0["name"] as? String == "process_name" }
            .compactMap { ($0["args"] as? [String: Any])?["name"] as? String })
        #expect(processes.isSuperset(of: ["faults", "coordinator", "experiment", "gpu-a", "gpu-b", "gpu-v", "mem-a", "render-e"]), "\(processes)")
        let starts = events.filter { $0["ph"] as? String == "s" }, ends = events.filter { $0["ph"] as? String == "f" }
        #expect(starts.count > 20 && starts.count == ends.count)
        let windows = events.filter { $0["cat"] as? String == "fault" && $0["ph"] as? String == "X" }.compactMap { $0["name"] as? String }
        #expect(windows.count == 5, "\(windows)")
        #expect(windows.contains("kill gpu-v") && windows.contains("crash_coordinator coordinator"))
        #expect(events.contains { $0["ph"] as? String == "C" && $0["name"] as? String == "nodes" })
        // Two coordinator instances (crash and restart), two of the killed node; both in the trace.
        let instances = try #require((json["metadata"] as? [String: Any])?["instances"] as? [String: Any])
        #expect(instances.keys.filter { $0.hasPrefix("coordinator#") }.count == 2)
        #expect(instances.keys.filter { $0.hasPrefix("gpu-v#") }.count == 2)
        for f in ["summary.json", "report.html", "metrics.csv", "metrics/coordinator.csv", "spec.yaml", "raw/jobs.json", "scheduling/jct_cdf.svg"] {
            #expect(FileManager.default.fileExists(atPath: out + "/" + f), "missing \(f)")
        }
        let html = try String(contentsOfFile: out + "/report.html", encoding: .utf8)
        #expect(html.contains("<svg") && html.contains("Lost-nothing check: passed"))

        // `strato report` rebuilds the same from the raw files.
        try FileManager.default.removeItem(atPath: out + "/trace.json")
        let again = try ExperimentReport.build(directory: out)
        #expect(again.trace.events == s.trace.events && again.lostNothing.ok)
        #expect(FileManager.default.fileExists(atPath: out + "/trace.json"))
    }

    @Test("inference services: every request gets an answer although the node serving them is killed and the coordinator crashes")
    func servicesSurviveFaults() throws {
        let dir = NSTemporaryDirectory() + "strato-svc-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // 0.1 h of requests at 60x: 6 s of wall time, about 1,400 requests over two services. The
        // only A100-80GB node serves every replica and is killed while requests arrive.
        let yaml = """
            name: it-services
            topology:
              name: it-services
              security: open
              coordinator: {endpoint: "ipc://\(dir)/control.sock"}
              nodes:
                - {id: gpu-a, kind: gpu, site: cloud, gpu: {model: A100-80GB, count: 4}}
                - {id: gpu-v, kind: gpu, site: cloud, gpu: {model: V100, count: 4}}
            workload: {kind: scheduling, jobs_per_hour: 20, hours: 0.1, services: {rps: 2, gpu: A100-80GB}}
            policy: hybrid
            time_scale: 60
            end: duration
            duration: 16s
            seeds: [5]
            faults:
              - {at: 2s, action: kill, target: gpu-a, for: 2s}
              - {at: 5s, action: crash_coordinator, for: 1500ms}
            """
        let file = dir + "/spec.yaml"
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        let spec = try ExperimentSpec.load(file: file)
        let platform = LocalPlatform(runDirectory: dir + "/run", executable: TestCluster.stratoBinary)
        let runner = ExperimentRunner(spec: spec, platform: platform, out: dir + "/results")
        var lines: [String] = []
        runner.print = { lines.append($0) }
        let s = try #require(try runner.runAll().first)
        let log = lines.joined(separator: "\n")
        let r = s.requests
        #expect(r.generated > 1000 && r.accepted == r.generated && r.known == r.generated, "\(r)\n\(log)")
        #expect(r.completed == r.generated && r.lost.isEmpty, "\(r)\n\(log)")
        #expect(r.services.count == 2 && r.services.allSatisfy { $0.batch >= 1 && $0.capacityRPS > 0 })
        // The kill cost the requests on the dead node's replicas their first attempt.
        #expect(r.services.reduce(0) { $0 + $1.redispatched } > 0, "\(r)")
        #expect(r.services.reduce(0) { $0 + $1.replicaStarts } >= 4, "\(r)")   // each service started again after the kill
        // Some met the SLO, and the outages made some miss it: the figure is measured, not assumed.
        #expect(r.withinSLO > 0 && r.withinSLO < r.generated, "\(r)")
        #expect(s.lostNothing.ok, "\(s.lostNothing.lines)\n\(log)")
        #expect(log.contains("requests") && log.contains("in SLO"))
        let csv = try String(contentsOfFile: dir + "/results/requests.csv", encoding: .utf8).split(separator: "\n")
        #expect(csv.count == r.generated + 1)
        #expect(!csv.dropFirst().contains { $0.contains(",-1.0,") })   // every row has a finish and a latency
    }

    @Test("a migration spec runs end to end for two policies: a drained node's requests migrate with their KV, nothing is lost, and the outputs show it")
    func migrationSpec() throws {
        let dir = NSTemporaryDirectory() + "strato-mig-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let yaml = """
            name: it-migration
            topology:
              name: it-migration
              security: curve
              coordinator: {endpoint: "ipc://\(dir)/control.sock"}
              nodes:
                - {id: gpu-0, kind: gpu, site: cloud, gpu: {model: A40, count: 1}}
                - {id: gpu-1, kind: gpu, site: cloud, gpu: {model: A40, count: 1}}
            workload:
              kind: services
              hours: 0.02
              services: {trace: conversation, rps: 2, gpu: A40, slo_s: 60, replicas: 2, max_num_seqs: 256, migration: [none, llumnix], priority_share: 0.2}
            time_scale: 5
            end: jobs_done
            duration: 60s
            seeds: [2]
            faults:
              - {at: 4s, action: drain, target: gpu-1, for: 6s}
            """
        let file = dir + "/spec.yaml"
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        let spec = try ExperimentSpec.load(file: file)
        let runner = ExperimentRunner(spec: spec, platform: LocalPlatform(runDirectory: dir + "/run", executable: TestCluster.stratoBinary), out: dir + "/results")
        var lines: [String] = []
        runner.print = { lines.append($0) }
        let summaries = try runner.runAll()
        let log = lines.joined(separator: "\n")
        #expect(summaries.map(\.migrationPolicy) == ["none", "llumnix"])
        for s in summaries {
            #expect(s.lostNothing.ok, "\(s.migrationPolicy): \(s.lostNothing.lines)\n\(log)")
            #expect(s.requests.generated > 0 && s.requests.completed == s.requests.accepted && s.requests.accepted == s.requests.generated)
            #expect(s.migrations.known && s.migrations.unfinished.isEmpty)
            // The drain moved requests off gpu-1 whatever the policy, each with its KV as real bytes.
            #expect((s.migrations.byReason["drain"] ?? 0) > 0, "\(s.migrationPolicy): \(s.migrations.byReason) \(s.migrations.byState)")
            #expect(s.migrations.samples.contains { $0.state == "done" && $0.bytes > 0 && $0.from == "gpu-1" })
            let sub = dir + "/results/" + s.migrationPolicy
            #expect(FileManager.default.fileExists(atPath: sub + "/migrations.csv"))
            let report = try String(contentsOfFile: sub + "/report.html", encoding: .utf8)
            #expect(report.contains("Live migration") && report.contains("Downtime against sequence length"))
            let trace = try String(contentsOfFile: sub + "/trace.json", encoding: .utf8)
            #expect(trace.contains("kv final") && trace.contains("migrate "), "migrations are spans and events in trace.json")
        }
        let top = try String(contentsOfFile: dir + "/results/report.html", encoding: .utf8)
        #expect(top.contains("migration policies compared") && top.contains("Time to first token by migration policy"))
        #expect(log.contains("P99 TTFT, best migration policy"))
    }
}
}
