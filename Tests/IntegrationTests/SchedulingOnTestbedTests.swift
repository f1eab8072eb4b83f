import Cluster
import Experiments
import Foundation
import Protocol
import Scheduling
import Testing

extension MultiProcess {
@Suite("Scheduling on the testbed")
struct SchedulingOnTestbedTests {
    @Test("a small trace replays on real agents; a GPU node killed mid-run loses no job: its jobs restart from their checkpoint elsewhere")
    func replayWithKill() throws {
        let nodes = """
              - {id: gpu-a, kind: gpu, site: cloud, gpu: {model: A100-80GB, count: 4}}
              - {id: gpu-b, kind: gpu, site: cloud, gpu: {model: A100-80GB, count: 4}}
              - {id: gpu-v, kind: gpu, site: cloud, gpu: {model: V100, count: 4}}
            """
        let cluster = try TestCluster(name: "sched", security: .open, nodes: nodes,
                                      coordinatorExtra: "  policy: db-fifo\n  time_scale: 2000", timeout: 60)
        defer { cluster.shutdown() }
        let (kb, _, _) = KnowledgeSeeding.seeded(dataDirectory: DataPaths.dataDirectory(), gpuModels: ["A100-80GB", "V100"])
        var g = TraceGenerator()
        g.hours = 1
        g.jobsPerHour = 24
        g.maxDurationHours = 2
        let w = try g.generate(seed: 3, kb: kb, maxGPUsPerNode: ["A100-80GB": 4, "V100": 4])
        let client = try cluster.client()
        defer { client.close() }
        let sub = try client.submit(w.jobs.map(\.submission))
        #expect(sub.accepted == UInt32(w.jobs.count), "\(sub.rejected)")

        // Bad input: unknown model, a job that fits nowhere, a duplicate id — each named.
        var bad = w.jobs[0].submission
        bad.jobID = "bad-model"; bad.model = "GPT-9"
        var dup = w.jobs[0].submission
        dup.jobID = w.jobs[0].id
        let rej = try client.submit([bad, dup])
        #expect(rej.accepted == 0)
        #expect(rej.rejected.contains { $0.hasPrefix("bad-model: unknown model") })
        #expect(rej.rejected.contains { $0.contains("a job with this id exists") })

        // Kill whichever GPU node first runs a job.
        var victim: String?
        let deadline = Date().addingTimeInterval(240)
        var last: JobsReply?
        while Date() < deadline {
            let r = try client.jobs()
            last = r
            if victim == nil, let running = r.jobs.first(where: { $0.phase == "running" && !$0.nodeID.isEmpty }) {
                victim = running.nodeID
                _ = kill(cluster.pid(of: running.nodeID), SIGKILL)
            }
            if victim != nil && r.unfinished == 0 { break }
            Thread.sleep(forTimeInterval: 0.25)
        }
        let r = try #require(last)
        #expect(victim != nil)
        #expect(r.unfinished == 0, "unfinished: \(r.jobs.filter { $0.phase != "finished" }.map(\.jobID))")
        #expect(r.jobs.count == w.jobs.count)
        #expect(r.jobs.allSatisfy { $0.phase == "finished" && $0.finish >= $0.arrival && $0.workDone >= $0.work * 0.999 })
        #expect(r.jobs.map(\.restarts).reduce(0, +) >= 1, "the killed node's jobs were restarted")
        #expect(r.jobs.filter { $0.restarts > 0 }.allSatisfy { $0.nodeID != victim })
        #expect(r.notes.first?.contains("emulated") == true)
        let st = try cluster.status()
        #expect(st.nodes.first { $0.nodeID == victim }?.state == .dead)
    }
}
}
