import Cluster
import Foundation
import Protocol
import Scheduling

/// Runs each job as a real process: the `process` backend, for nodes with real GPUs.
///
/// The command (argv; `{job}` is replaced by the job id) starts in its own process group with
/// `CUDA_VISIBLE_DEVICES` set to the placement's GPU indices and the job described in the
/// environment:
///
///     STRATO_JOB_ID, STRATO_MODEL, STRATO_TASK, STRATO_BATCH_PER_GPU, STRATO_GPUS (count),
///     STRATO_TOTAL_WORK, STRATO_RESUME_WORK, STRATO_UNIT,
///     STRATO_PROGRESS_FILE   append lines `work=W checkpoint=C step_seconds=S` as it runs
///     STRATO_CHECKPOINT_DIR  the job's checkpoints (kept across restarts on this host)
///
/// The job is finished when the process exits 0; a non-zero exit is a failure the coordinator
/// retries from the last checkpoint. A preemption sends SIGTERM (the job should checkpoint and
/// exit) and answers with the last checkpoint the job wrote; SIGKILL follows after
/// `terminateGraceSeconds`. Reports are real measurements (`emulated: false`).
public final class ProcessJobRunner: JobRunner {
    public let command: [String]
    public let workDirectory: String
    public var terminateGraceSeconds = 10.0

    struct Job {
        var start: StartJob
        var commandID: UInt64
        var pid: pid_t
        var startedWall: Int64
        var directory: String
        var lastReportWall: Int64
        var lastReportWork: Double
    }

    public struct Progress: Equatable {
        public var work: Double
        public var checkpoint: Double
        public var stepSeconds: Double?
        public init(work: Double, checkpoint: Double, stepSeconds: Double?) { self.work = work; self.checkpoint = checkpoint; self.stepSeconds = stepSeconds }
    }

    private var jobs: [String: Job] = [:]
    private var terminal: [String: JobReport] = [:]
    /// Preempted processes still exiting: pid → SIGKILL deadline (wall nanos).
    private var stopping: [pid_t: Int64] = [:]

    /// The node's tracer (`FeatureHandler.attach`); a recorder of its own, off, until then.
    public var tracer = Tracer()

    public init(command: [String], workDirectory: String) {
        self.command = command
        self.workDirectory = workDirectory
    }

    public var runningIDs: [String] { jobs.keys.sorted() }
    public func busyGPUs() -> Set<UInt32> { Set(jobs.values.flatMap(\.start.gpus)) }

    public func start(_ s: StartJob, commandID: UInt64, wallNanos: Int64) -> (ok: Bool, detail: String) {
        guard !command.isEmpty else { return (false, "the process backend has no job command") }
        if let old = jobs[s.jobID] { signalGroup(old.pid, SIGKILL) }
        let dir = "\(workDirectory)/\(TraceSpool.safeName(s.jobID))"
        let progress = dir + "/progress"
        do {
            try FileManager.default.createDirectory(atPath: dir + "/checkpoint", withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: progress, contents: nil)   // a fresh run reports afresh
        } catch {
            return (false, "cannot prepare \(dir): \(error)")
        }
        let env = [
            "CUDA_VISIBLE_DEVICES": s.gpus.map(String.init).joined(separator: ","),
            "STRATO_JOB_ID": s.jobID, "STRATO_MODEL": s.model, "STRATO_TASK": s.task,
            "STRATO_BATCH_PER_GPU": "\(s.batchPerGpu)", "STRATO_GPUS": "\(s.gpus.count)",
            "STRATO_TOTAL_WORK": "\(s.totalWork)", "STRATO_RESUME_WORK": "\(s.resumeWork)", "STRATO_UNIT": s.unit,
            "STRATO_PROGRESS_FILE": progress, "STRATO_CHECKPOINT_DIR": dir + "/checkpoint",
        ]
        let argv = command.map { $0.replacingOccurrences(of: "{job}", with: s.jobID) }
        let pid: pid_t
        do {
            pid = try ProcessLauncher.spawn(argv[0], Array(argv.dropFirst()), logFile: dir + "/job.log", environment: env)
        } catch {
            return (false, "cannot start \(argv[0]): \(error)")
        }
        terminal[s.jobID] = nil
        jobs[s.jobID] = Job(start: s, commandID: commandID, pid: pid, startedWall: wallNanos, directory: dir,
                            lastReportWall: wallNanos, lastReportWork: s.resumeWork)
        tracer.instant("start \(s.jobID)", category: "job", track: "jobs",
                              args: ["job": s.jobID, "pid": "\(pid)", "CUDA_VISIBLE_DEVICES": env["CUDA_VISIBLE_DEVICES"]!, "emulated": "false"])
        return (true, "started \(s.jobID) as pid \(pid) with CUDA_VISIBLE_DEVICES=\(env["CUDA_VISIBLE_DEVICES"]!)")
    }

    public func preempt(_ id: String, wallNanos: Int64) -> PreemptOutcome {
        guard let j = jobs.removeValue(forKey: id) else { return PreemptOutcome(checkpointedWork: nil, detail: "\(id) is not running here") }
        let saved = ProcessJobRunner.lastProgress(j.directory + "/progress")?.checkpoint ?? j.start.resumeWork
        signalGroup(j.pid, SIGTERM)
        stopping[j.pid] = wallNanos + Int64(terminateGraceSeconds * 1e9)
        tracer.span("run \(id)", category: "job", track: "jobs", start: j.startedWall, end: wallNanos,
                           args: ["job": id, "outcome": "preempted", "checkpoint": "\(saved)", "emulated": "false"])
        return PreemptOutcome(checkpointedWork: saved, detail: "stopped \(id) at its checkpoint (\(saved))")
    }

    public func reports(wallNanos now: Int64) -> [JobReport] {
        reapStopping(now)
        var out: [JobReport] = []
        for id in jobs.keys.sorted() {
            var j = jobs[id]!
            var r = JobReport()
            r.jobID = id
            r.emulated = false
            r.startCommandID = j.commandID
            let p = ProcessJobRunner.lastProgress(j.directory + "/progress")
            r.workDone = p?.work ?? j.start.resumeWork
            r.checkpointedWork = p?.checkpoint ?? j.start.resumeWork
            var status: Int32 = 0
            if waitpid(j.pid, &status, WNOHANG) == j.pid {
                let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
                r.endedAtUnixNanos = now
                if code == 0 {
                    r.state = .jobFinished
                    r.workDone = max(r.workDone, j.start.totalWork)
                    r.checkpointedWork = r.workDone
                } else {
                    r.state = .jobFailed
                    r.detail = (code >= 0 ? "exit status \(code)" : "killed by signal \(status & 0x7f)") + "; log: " + ProcessJobRunner.tail(j.directory + "/job.log")
                }
                tracer.span("run \(id)", category: "job", track: "jobs", start: j.startedWall, end: now,
                                   args: ["job": id, "outcome": r.state == .jobFinished ? "finished" : "failed", "detail": r.detail, "emulated": "false"])
                terminal[id] = r
                jobs[id] = nil
                continue
            }
            r.state = p == nil ? .jobLoading : .jobRunning
            if let step = p?.stepSeconds, step > 0 { r.meanStepSeconds = step }
            let dt = TraceClock(zeroWall: j.startedWall, timeScale: j.start.timeScale).traceSeconds(fromWall: j.lastReportWall, toWall: now)
            if dt > 0, r.workDone > j.lastReportWork { r.throughput = (r.workDone - j.lastReportWork) / dt }
            r.gpuUtilization = r.state == .jobRunning ? 1 : 0
            j.lastReportWall = now
            j.lastReportWork = r.workDone
            jobs[id] = j
            out.append(r)
        }
        return out + terminal.keys.sorted().map { terminal[$0]! }
    }

    public func settle(_ ids: [String]) { for id in ids { terminal[id] = nil } }

    /// Stops every job's process at agent shutdown: SIGTERM (they checkpoint), then SIGKILL to
    /// whatever is left after at most 3 s (a testbed stops an agent with SIGKILL after 5 s, and
    /// jobs must not outlive it). The coordinator restarts them from their checkpoints.
    public func stopAll() {
        for j in jobs.values { signalGroup(j.pid, SIGTERM) }
        let deadline = Date().addingTimeInterval(min(terminateGraceSeconds, 3))
        for j in jobs.values {
            var status: Int32 = 0
            while waitpid(j.pid, &status, WNOHANG) == 0 && Date() < deadline { usleep(20_000) }
            if waitpid(j.pid, &status, WNOHANG) == 0 { signalGroup(j.pid, SIGKILL) }
        }
    }

    private func reapStopping(_ now: Int64) {
        for (pid, deadline) in stopping {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid || kill(pid, 0) != 0 { stopping[pid] = nil; continue }
            if now >= deadline { signalGroup(pid, SIGKILL) }
        }
    }

    private func signalGroup(_ pid: pid_t, _ sig: Int32) {
        // The job runs in its own session: signal the whole group (its children too).
        if kill(-pid, sig) != 0 { _ = kill(pid, sig) }
    }

    /// The last complete `work=… checkpoint=… step_seconds=…` line of a progress file.
    public static func lastProgress(_ path: String) -> Progress? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n").reversed() {
            if let p = parse(String(line)) { return p }
        }
        return nil
    }

    public static func parse(_ line: String) -> Progress? {
        var kv: [String: Double] = [:]
        for part in line.split(separator: " ") {
            let f = part.split(separator: "=", maxSplits: 1)
            guard f.count == 2, let v = Double(f[1]), v.isFinite, v >= 0 else { continue }
            kv[String(f[0])] = v
        }
        guard let w = kv["work"] else { return nil }
        return Progress(work: w, checkpoint: kv["checkpoint"] ?? 0, stepSeconds: kv["step_seconds"])
    }

    static func tail(_ path: String) -> String {
        guard let t = try? String(contentsOfFile: path, encoding: .utf8) else { return "(no log)" }
        return t.split(separator: "\n").suffix(3).joined(separator: " | ")
    }
}

