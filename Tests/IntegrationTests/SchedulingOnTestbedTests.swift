import Cluster
import Experiments
import Foundation
import GPUAgent
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

    @Test("the process backend: jobs run as real processes with CUDA_VISIBLE_DEVICES set to their placement, one fails once and is retried from its checkpoint, all finish")
    func processBackend() throws {
        // A stand-in training program: 10 steps to the end from where it resumes, progress and
        // checkpoints as it goes; the job 'flaky' fails once (exit 3) half-way.
        let script = #"w=${STRATO_RESUME_WORK%.*}; total=${STRATO_TOTAL_WORK%.*}; step=$(( (total + 9) / 10 )); echo "$CUDA_VISIBLE_DEVICES" > "$STRATO_CHECKPOINT_DIR/visible-$w"; while [ "$w" -lt "$total" ]; do w=$((w + step)); [ "$w" -gt "$total" ] && w=$total; echo "work=$w checkpoint=$w step_seconds=0.05" >> "$STRATO_PROGRESS_FILE"; if [ "$STRATO_JOB_ID" = flaky ] && [ ! -f "$STRATO_CHECKPOINT_DIR/failed" ] && [ "$w" -ge $((total / 2)) ]; then touch "$STRATO_CHECKPOINT_DIR/failed"; echo "simulated crash" >&2; exit 3; fi; sleep 0.05; done"#
        let quoted = script.replacingOccurrences(of: "'", with: "''")
        let nodes = """
              - {id: gpu-p, kind: gpu, site: cloud, gpu: {model: A100-80GB, count: 4, job_command: '\(quoted)'}}
            """
        let cluster = try TestCluster(name: "proc", security: .open, nodes: nodes, coordinatorExtra: "  policy: fifo\n  time_scale: 1", timeout: 60)
        defer { cluster.shutdown() }
        let client = try cluster.client()
        defer { client.close() }
        var subs: [JobSubmission] = []
        for (i, id) in ["a", "b", "flaky"].enumerated() {
            var s = JobSubmission()
            s.jobID = id; s.model = "Llama-2-7b"; s.task = "finetune-lora"; s.batchPerGpu = 8; s.arrival = Double(i) * 0.2
            s.requestedGpuModel = "A100-80GB"; s.requestedGpus = id == "b" ? 2 : 1; s.work = 200; s.unit = "steps"
            subs.append(s)
        }
        let sub = try client.submit(subs)
        #expect(sub.accepted == 3, "\(sub.rejected)")
        var last: JobsReply?
        let deadline = Date().addingTimeInterval(90)
        while Date() < deadline {
            last = try client.jobs()
            if last!.unfinished == 0 && last!.jobs.count == 3 { break }
            Thread.sleep(forTimeInterval: 0.25)
        }
        let r = try #require(last)
        #expect(r.unfinished == 0, "\(r.jobs.map { "\($0.jobID) \($0.phase) \($0.workDone)" }) \(r.notes)")
        #expect(r.jobs.allSatisfy { $0.phase == "finished" && $0.workDone >= 200 })
        let flaky = try #require(r.jobs.first { $0.jobID == "flaky" })
        #expect(flaky.failedStarts == 1, "\(flaky)")
        #expect(r.notes.contains { $0.contains("flaky") && $0.contains("exit status 3") && $0.contains("simulated crash") }, "\(r.notes)")
        // Each run saw exactly its placement's GPUs; the retry resumed from the checkpoint (100), not 0.
        let jobs = cluster.directory + "/run/jobs/gpu-p"
        let b = try FileManager.default.contentsOfDirectory(atPath: jobs + "/b/checkpoint").filter { $0.hasPrefix("visible-") }
        let gpusB = try String(contentsOfFile: jobs + "/b/checkpoint/" + b[0], encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(gpusB.split(separator: ",").count == 2, "\(gpusB)")
        let flakyRuns = try FileManager.default.contentsOfDirectory(atPath: jobs + "/flaky/checkpoint").filter { $0.hasPrefix("visible-") }.sorted()
        #expect(flakyRuns == ["visible-0", "visible-100"], "\(flakyRuns)")
        let st = try cluster.status()
        #expect(st.nodes.first?.capabilities.gpu.emulated == (NvidiaSMI.list() == nil))
    }
}
}
