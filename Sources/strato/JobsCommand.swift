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
        print("job".padding(toLength: 12, withPad: " ", startingAt: 0) + "phase     node             config       done    arrival  start    finish   preempt restarts")
        for j in r.jobs {
            let cfg = j.gpus > 0 ? "\(j.gpus)x\(j.gpuModel)" : "-"
            print(j.jobID.padding(toLength: 12, withPad: " ", startingAt: 0) + j.phase.padding(toLength: 10, withPad: " ", startingAt: 0)
                  + j.nodeID.padding(toLength: 17, withPad: " ", startingAt: 0) + cfg.padding(toLength: 13, withPad: " ", startingAt: 0)
                  + String(format: "%5.1f%%  %7.0f  %7.0f  %7.0f  %-7u %u", 100 * j.workDone / max(j.work, 1e-9), j.arrival, j.firstStart, j.finish, j.preemptions, j.restarts))
        }
    }
}
