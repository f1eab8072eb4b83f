import Coordinator
@testable import Features
import Foundation
import Protocol
import Scheduling
import Testing

/// The jobs feature's coordinator-side machine (`JobManager` over the shared `Scheduler`), driven
/// directly with wall times in nanoseconds and no sockets: what the controller does with starts,
/// reports (current, stale, zombie), refusals and preemption acknowledgements.
@Suite("Feature: jobs (machine, no sockets)")
struct JobsFeatureTests {
    static let kb = KnowledgeBase(rows: [row("m", "V100", 1, 2), row("m", "V100", 2, 3.5)])
    static let second: Int64 = 1_000_000_000

    /// A manager with one 2-GPU V100 node and one job submitted at trace time 0 (time scale 1).
    func manager(work: Double = 100) -> JobManager {
        let m = JobManager(policy: Policies.named("fifo")!, kb: Self.kb, timeScale: 1, t0Wall: 0)
        m.nodeUp("n1", gpuModel: "V100", count: 2, newLife: true, now: 0)
        var s = JobSubmission(); s.jobID = "j1"; s.model = "m"; s.task = "train"; s.batchPerGpu = 8; s.requestedGpus = 1; s.work = work
        let (accepted, rejected) = m.submit([s])
        #expect(accepted == 1 && rejected.isEmpty, "\(rejected)")
        _ = m.startClockIfNeeded(wall: 10 * Self.second)
        return m
    }

    func report(_ id: String, _ state: JobState, work: Double, start: UInt64, endedAt: Int64 = 0) -> JobReport {
        var r = JobReport(); r.jobID = id; r.state = state; r.workDone = work; r.checkpointedWork = work; r.startCommandID = start
        r.endedAtUnixNanos = endedAt
        return r
    }

    @Test("rates measured by running jobs are stored at the flush and load back as online rows (a restart keeps them; `strato kb show` counts them)")
    func onlineRatesStored() throws {
        let m = manager()
        guard case .startJob(_, let p, _)? = m.tick(wall: 10 * Self.second).first else { Issue.record("expected a start"); return }
        m.noteStartCommand(job: "j1", commandID: 7)
        var r = report("j1", .jobRunning, work: 40, start: 7)
        r.throughput = 2.5; r.meanStepSeconds = 0.4
        _ = m.apply(reports: [r], from: "n1", clockOffsetNanos: 0)
        let rows = m.takeDirtyOnline()
        #expect(rows.count == 1 && rows.first?.key == p.key && rows.first?.origin == .online && rows.first?.throughput == 2.5, "\(rows)")
        #expect(m.takeDirtyOnline().isEmpty, "taken once")
        let dir = NSTemporaryDirectory() + "strato-online-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try StateStore(directory: dir, schemas: SchedulingController.storeSchema).saveKnowledge(rows: rows)
        let kb = try StateStore(directory: dir, schemas: SchedulingController.storeSchema).loadKnowledge()
        #expect(kb.online[p.key]?.throughput == 2.5 && kb.online[p.key]?.stepTime == 0.4 && kb.offline[p.key] == nil)
    }

    @Test("a job starts once it has arrived; its current reports count, a stale one is settled and ignored, a zombie is stopped once")
    func reports() throws {
        let m = manager()
        guard case .startJob(let id, let p, _)? = m.tick(wall: 10 * Self.second).first else { Issue.record("expected a start"); return }
        #expect(id == "j1" && p.nodeID == "n1")
        m.noteStartCommand(job: "j1", commandID: 7)
        // Current: progress recorded, nothing settled (not terminal), nothing to stop.
        var (settled, stop) = m.apply(reports: [report("j1", .jobRunning, work: 40, start: 7)], from: "n1", clockOffsetNanos: 0)
        #expect(settled.isEmpty && stop.isEmpty)
        #expect(m.scheduler.state.jobs["j1"]?.workDone == 40)
        // Stale: a finish from an older start (command 3) must not finish the job, only stop repeating.
        (settled, stop) = m.apply(reports: [report("j1", .jobFinished, work: 100, start: 3, endedAt: 20 * Self.second)], from: "n1", clockOffsetNanos: 0)
        #expect(settled == ["j1"] && stop.isEmpty)
        #expect(m.scheduler.state.jobs["j1"]?.phase == .running && m.scheduler.state.jobs["j1"]?.workDone == 40)
        // Zombie: a node reports running a job it was never given: stop it, once.
        (settled, stop) = m.apply(reports: [report("ghost", .jobRunning, work: 1, start: 1)], from: "n1", clockOffsetNanos: 0)
        #expect(stop == ["ghost"] && settled.isEmpty)
        (_, stop) = m.apply(reports: [report("ghost", .jobRunning, work: 2, start: 1)], from: "n1", clockOffsetNanos: 0)
        #expect(stop.isEmpty, "the stop command is already on its way")
        // The current finish, stamped on the agent's clock 2 s behind: finished at trace 12 s.
        (settled, _) = m.apply(reports: [report("j1", .jobFinished, work: 100, start: 7, endedAt: 20 * Self.second)], from: "n1",
                               clockOffsetNanos: 2 * Self.second)
        #expect(settled == ["j1"])
        let j = try #require(m.scheduler.state.jobs["j1"])
        #expect(j.phase == .finished && j.finishedAt == 12)
        #expect(m.scheduler.state.invariantViolations().isEmpty)
    }

    @Test("a refused start puts the job back in the queue, and the next round starts it again")
    func refusedStart() {
        let m = manager()
        guard case .startJob? = m.tick(wall: 10 * Self.second).first else { Issue.record("expected a start"); return }
        m.noteStartCommand(job: "j1", commandID: 4)
        m.startRefused(job: "j1", now: 1)
        #expect(m.scheduler.state.jobs["j1"]?.phase == .pending)
        #expect(m.startCommand["j1"] == nil)
        #expect(m.scheduler.state.free.totalFree == 2, "the refused placement's GPU is free again")
        guard case .startJob(let id, _, _)? = m.tick(wall: 11 * Self.second).first else { Issue.record("expected a second start"); return }
        #expect(id == "j1")
    }

    @Test("a preemption's acknowledgement carries the checkpoint the job resumes from")
    func preemptionAcknowledged() {
        let m = manager()
        guard case .startJob? = m.tick(wall: 10 * Self.second).first else { Issue.record("expected a start"); return }
        m.noteStartCommand(job: "j1", commandID: 5)
        _ = m.apply(reports: [report("j1", .jobRunning, work: 30, start: 5)], from: "n1", clockOffsetNanos: 0)
        m.scheduler.state.preempt(job: "j1", workDone: nil, at: 2)
        m.preemptAcknowledged(job: "j1", checkpointedWork: 55)
        let j = m.scheduler.state.jobs["j1"]
        #expect(j?.phase == .pending && j?.workDone == 55 && j?.checkpointedWork == 55)
        #expect(m.dirtyJobs.contains("j1"), "the new checkpoint is written with the next commit")
    }

    @Test("the node's death returns its job to the queue from the last checkpoint; a restarted agent is a new life")
    func nodeDeath() {
        let m = manager()
        guard case .startJob? = m.tick(wall: 10 * Self.second).first else { Issue.record("expected a start"); return }
        m.noteStartCommand(job: "j1", commandID: 5)
        var r = report("j1", .jobRunning, work: 50, start: 5); r.checkpointedWork = 20
        _ = m.apply(reports: [r], from: "n1", clockOffsetNanos: 0)
        m.nodeDead("n1", now: 3)
        let j = m.scheduler.state.jobs["j1"]
        #expect(j?.phase == .pending && j?.workDone == 20 && j?.restarts == 1)
        #expect(m.startCommand["j1"] == nil)
        #expect(m.tick(wall: 14 * Self.second).isEmpty, "no node alive: nothing starts")
        m.nodeUp("n1", gpuModel: "V100", count: 2, newLife: true, now: 5)
        guard case .startJob(_, _, let resume)? = m.tick(wall: 15 * Self.second).first else { Issue.record("expected a restart"); return }
        #expect(resume == 20)
    }
}
