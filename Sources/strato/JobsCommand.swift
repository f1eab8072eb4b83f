import ArgumentParser
import Cluster
import Experiments
import Foundation
import Protocol
import Scheduling

struct SubmitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "submit", abstract: "Submit an offline job (fine-tuning or training) to the coordinator's scheduler.")
    @OptionGroup var address: CoordinatorAddress
    @Option(help: "Job id (default: job-<time>).") var id: String?
    @Option(help: "Model, e.g. Llama-2-7b, opt-350m, ResNet-50 (see `strato kb show`).") var model: String
    @Option(help: "finetune-full, finetune-lora or train.") var task = "finetune-lora"
    @Option(help: "Per-GPU batch size as in the knowledge base (8 for VectorLM fine-tuning).") var batch = 8
    @Option(help: "GPUs asked for.") var gpus = 1
    @Option(name: .customLong("gpu-model"), help: "GPU model asked for (fifo runs exactly this; informed policies may choose).") var gpuModel: String?
    @Option(help: "Work in the knowledge base's unit (tokens for fine-tuning, steps for training).") var work: Double
    @Option(help: "Arrival in trace seconds since the scheduler started (default: now).") var arrival: Double = 0

    func run() throws {
        let spec = JobSpec(id: id ?? "job-\(Int(Date().timeIntervalSince1970))", kind: JobKind(model: model, task: task, batchPerGPU: batch), arrival: arrival,
                           requestedGPUModel: gpuModel, requestedGPUs: gpus, work: work, unit: "")
        let client = try address.client()
        defer { client.close() }
        let r = try client.submit([spec.submission])
        if r.accepted == 1 { print("submitted \(spec.id)") }
        for e in r.rejected { print("rejected: \(e)") }
        if r.accepted == 0 { throw ExitCode(1) }
    }
}

struct JobsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "jobs", abstract: "Offline jobs known to the coordinator's scheduler.")
    @OptionGroup var address: CoordinatorAddress
    @Flag(help: "JSON output.") var json = false

    func run() throws {
        let client = try address.client()
        defer { client.close() }
        let r = try client.jobs()
        if json { print(try r.jsonString()); return }
        print("policy \(r.policy), time scale \(r.timeScale)×, trace time \(String(format: "%.0f", r.traceNow)) s, \(r.unfinished) unfinished — \(r.notes.first ?? "")")
        // Columns as wide as their longest entry (a job id of 12 characters or more ran into its phase).
        let idWidth = max(12, (r.jobs.map(\.jobID.count).max() ?? 0) + 2)
        let nodeWidth = max(17, (r.jobs.map(\.nodeID.count).max() ?? 0) + 2)
        print("job".padding(toLength: idWidth, withPad: " ", startingAt: 0) + "phase     " + "node".padding(toLength: nodeWidth, withPad: " ", startingAt: 0)
              + "config       done    arrival  start    finish   preempt restarts")
        for j in r.jobs {
            let cfg = j.gpus > 0 ? "\(j.gpus)x\(j.gpuModel)" : "-"
            print(j.jobID.padding(toLength: idWidth, withPad: " ", startingAt: 0) + j.phase.padding(toLength: 10, withPad: " ", startingAt: 0)
                  + j.nodeID.padding(toLength: nodeWidth, withPad: " ", startingAt: 0) + cfg.padding(toLength: 13, withPad: " ", startingAt: 0)
                  + String(format: "%5.1f%%  %7.0f  %7.0f  %7.0f  %-7u %u", 100 * j.workDone / max(j.work, 1e-9), j.arrival, j.firstStart, j.finish, j.preemptions, j.restarts))
        }
    }
}

struct ServicesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "services", abstract: "Online inference services: replicas, requests and SLO attainment so far.")
    @OptionGroup var address: CoordinatorAddress
    @Flag(help: "JSON output.") var json = false
    @Flag(name: .customLong("requests"), help: "With --json: every request's record too.") var includeRequests = false

    func run() throws {
        let client = try address.client()
        defer { client.close() }
        let r = try client.requests(includeRequests: json && includeRequests)
        if json { print(try r.jsonString()); return }
        print("time scale \(r.timeScale)×, trace time \(String(format: "%.0f", r.traceNow)) s" + (r.notes.isEmpty ? "" : " — " + r.notes.joined(separator: "; ")))
        guard !r.services.isEmpty else { print("no services (submit them with an experiment's workload.services)"); return }
        print("service".padding(toLength: 18, withPad: " ", startingAt: 0) + "gpu         replicas  ready  want  req/s/rep  batch  requests  done     in SLO   p50 s   p99 s   resent")
        for s in r.services {
            let attained = s.submitted == 0 ? 100 : Double(s.withinSlo) / Double(s.submitted) * 100
            print(s.serviceID.padding(toLength: 18, withPad: " ", startingAt: 0) + s.gpuModel.padding(toLength: 12, withPad: " ", startingAt: 0)
                  + String(format: "%-9u %-6u %-5u %-10.2f %-6u %-9llu %-8llu %5.1f%%  %-7.2f %-7.2f %llu", s.replicas, s.ready, s.desired, s.capacityRps, s.batch,
                           s.submitted, s.completed, attained, s.latencyP50, s.latencyP99, s.redispatched))
        }
    }
}
