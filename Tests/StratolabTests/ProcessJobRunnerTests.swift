import Foundation
import Features
import GPUAgent
import Protocol
import Scheduling
import Testing

/// The process backend with real processes (shell scripts stand in for training programs).
@Suite("Process job backend", .serialized)
struct ProcessJobRunnerTests {
    /// A job that does `STRATO_TOTAL_WORK` steps of 10, reports each, records its GPUs, checkpoints
    /// on SIGTERM and exits 0; `fail` makes it exit 3 half-way.
    static let script = """
        w=${STRATO_RESUME_WORK%.*}; total=${STRATO_TOTAL_WORK%.*}
        echo "$CUDA_VISIBLE_DEVICES" > "$STRATO_CHECKPOINT_DIR/visible"
        trap 'echo "work=$w checkpoint=$w" >> "$STRATO_PROGRESS_FILE"; exit 0' TERM
        while [ "$w" -lt "$total" ]; do
          w=$((w + 10)); echo "work=$w checkpoint=$w step_seconds=0.02" >> "$STRATO_PROGRESS_FILE"
          [ "$STRATO_JOB_ID" = fail ] && [ "$w" -ge $((total / 2)) ] && { echo "boom: CUDA error" >&2; exit 3; }
          sleep 0.02
        done
        """

    func start(_ r: ProcessJobRunner, _ id: String, total: Double, resume: Double = 0, gpus: [UInt32] = [1, 3]) -> (ok: Bool, detail: String) {
        var s = StartJob()
        s.jobID = id; s.model = "m"; s.task = "lora"; s.gpuModel = "A100-80GB"; s.gpus = gpus
        s.totalWork = total; s.resumeWork = resume; s.unit = "steps"; s.timeScale = 1
        return r.start(s, commandID: 7, wallNanos: Int64(Date().timeIntervalSince1970 * 1e9))
    }

    func poll(_ r: ProcessJobRunner, until: (JobReport) -> Bool, id: String) -> JobReport? {
        for _ in 0..<500 {
            if let rep = r.reports(wallNanos: Int64(Date().timeIntervalSince1970 * 1e9)).first(where: { $0.jobID == id }), until(rep) { return rep }
            usleep(20_000)
        }
        return nil
    }

    func runner() -> (ProcessJobRunner, String) {
        let dir = NSTemporaryDirectory() + "strato-jobs-\(UUID().uuidString)"
        return (ProcessJobRunner(command: ["/bin/sh", "-c", ProcessJobRunnerTests.script], workDirectory: dir), dir)
    }

    @Test("a job runs as a process with CUDA_VISIBLE_DEVICES set to its GPUs, reports measured progress, and finishes on exit 0")
    func finishes() throws {
        let (r, dir) = runner()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(start(r, "j1", total: 100).ok)
        #expect(r.busyGPUs() == [1, 3])
        let running = try #require(poll(r, until: { $0.state == .jobRunning && $0.workDone >= 20 }, id: "j1"))
        #expect(!running.emulated && running.meanStepSeconds == 0.02)
        let done = try #require(poll(r, until: { $0.state == .jobFinished }, id: "j1"))
        #expect(done.workDone == 100 && done.checkpointedWork == 100 && done.endedAtUnixNanos > 0)
        #expect(try String(contentsOfFile: dir + "/j1/checkpoint/visible", encoding: .utf8) == "1,3\n")
        #expect(r.runningIDs.isEmpty && r.busyGPUs().isEmpty)
        // Terminal reports repeat until settled.
        #expect(r.reports(wallNanos: 0).contains { $0.jobID == "j1" && $0.state == .jobFinished })
        r.settle(["j1"])
        #expect(r.reports(wallNanos: 0).isEmpty)
    }

    @Test("preemption sends SIGTERM and answers with the last checkpoint; a restart resumes from it")
    func preempts() throws {
        let (r, dir) = runner()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(start(r, "j2", total: 100_000).ok)
        _ = try #require(poll(r, until: { $0.workDone >= 50 }, id: "j2"))
        let p = r.preempt("j2", wallNanos: 0)
        let saved = try #require(p.checkpointedWork)
        #expect(saved >= 50 && saved < 100_000)
        #expect(r.runningIDs.isEmpty)
        #expect(start(r, "j2", total: saved + 30, resume: saved).ok)
        let done = try #require(poll(r, until: { $0.state == .jobFinished }, id: "j2"))
        #expect(done.workDone == saved + 30)
    }

    @Test("agent shutdown stops every job process (they checkpoint on SIGTERM), so none outlives the agent")
    func stopAllAtShutdown() throws {
        let (r, dir) = runner()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(start(r, "long", total: 1_000_000).ok)
        _ = try #require(poll(r, until: { $0.workDone >= 30 }, id: "long"))
        let pid = try #require(pidOfJob(dir + "/long"))
        r.stopAll()
        #expect(kill(pid, 0) != 0, "the job's process is gone")
        let last = try #require(ProcessJobRunner.lastProgress(dir + "/long/progress"))
        #expect(last.checkpoint >= 30 && last.checkpoint == last.work, "it checkpointed on SIGTERM")
    }

    /// The job's pid, from the runner's start detail recorded in its log folder: read /proc for a
    /// shell whose environment names this job's progress file.
    func pidOfJob(_ jobDir: String) -> pid_t? {
        let me = getpid()
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), pid != me,
                  let env = FileManager.default.contents(atPath: "/proc/\(entry)/environ") else { continue }
            if String(decoding: env, as: UTF8.self).contains("STRATO_PROGRESS_FILE=\(jobDir)/progress") { return pid }
        }
        return nil
    }

    @Test("a process that exits with an error is a failure naming the exit status and the log, with its checkpoint")
    func fails() throws {
        let (r, dir) = runner()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(start(r, "fail", total: 100).ok)
        let f = try #require(poll(r, until: { $0.state == .jobFailed }, id: "fail"))
        #expect(f.detail.contains("exit status 3") && f.detail.contains("boom: CUDA error"), "\(f.detail)")
        #expect(f.checkpointedWork == 50)
    }

    @Test("progress lines and nvidia-smi output parse; junk is skipped")
    func parsing() {
        #expect(ProcessJobRunner.parse("work=120 checkpoint=100 step_seconds=0.5") == .init(work: 120, checkpoint: 100, stepSeconds: 0.5))
        #expect(ProcessJobRunner.parse("work=abc") == nil)
        #expect(ProcessJobRunner.parse("hello") == nil)
        let gpus = NvidiaSMI.parse("0, NVIDIA H100 80GB HBM3, 81559\n1, NVIDIA H100 80GB HBM3, 81559\nbad line\n")
        #expect(gpus.count == 2 && gpus[1].index == 1 && gpus[0].memoryMiB == 81559)
    }

    @Test("nvidia-smi's product names map to the catalogue's models, memory telling variants apart; an unknown GPU maps to none")
    func catalogueFromSMINames() {
        let cases: [(String, Int, String?)] = [
            ("NVIDIA H200", 143771, "H200"), ("NVIDIA H100 80GB HBM3", 81559, "H100"), ("NVIDIA H100 PCIe", 81559, "H100"),
            ("NVIDIA A100-SXM4-80GB", 81920, "A100-80GB"), ("NVIDIA A100-PCIE-40GB", 40960, "A100-40GB"),
            ("Tesla V100-SXM2-16GB", 16160, "V100"), ("Tesla V100-SXM2-32GB", 32510, "V100-32GB"), ("Tesla V100S-PCIE-32GB", 32510, "V100-32GB"),
            ("Tesla T4", 15360, "T4"), ("NVIDIA A10G", 23028, "A10"), ("NVIDIA A10", 23028, "A10"), ("NVIDIA A40", 46068, "A40"),
            ("NVIDIA L4", 23034, "L4"), ("NVIDIA L40S", 46068, "L40S"), ("Tesla K80", 11441, "K80"), ("Tesla P100-PCIE-16GB", 16280, "P100"),
            ("NVIDIA GeForce RTX 4090", 24564, nil), ("", 0, nil),
        ]
        for (name, mib, want) in cases {
            #expect(GPUCatalog.model(smiName: name, memoryMiB: mib)?.name == want, "\(name)")
        }
    }
}
