import Experiments
import Foundation
import Scheduling
import Twin

/// `strato bench twin` and `strato bench schedule`: replay speed of the digital twin and the
/// scheduler's decision latency, measured in one run (fifo as the baseline for each figure).
public enum SchedulingBench {
    static func seconds(_ body: () -> Void) -> Double {
        let t = DispatchTime.now().uptimeNanoseconds
        body()
        return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
    }

    /// 960-job trace on the D2.1-style 64-GPU cluster for every policy, then a large cluster.
    public static func twin(dataDirectory: String, largeGPUs: Int, largeJobs: Int, largePolicies: [SchedulingPolicy], print: (String) -> Void) throws {
        let nodes = try ClusterSpec.parse(ClusterSpec.d21)
        let (kb, _, _) = KnowledgeSeeding.seeded(dataDirectory: dataDirectory, gpuModels: ["T4", "A100-80GB", "V100"])
        let w = try TraceGenerator().generate(seed: 1, kb: kb, maxGPUsPerNode: ["T4": 4, "A100-80GB": 8, "V100": 8])
        print("twin replay, \(w.jobs.count) jobs on 64 GPUs (24×T4, 16×A100-80GB, 24×V100), release build recommended")
        print("policy          wall s    jobs/s     events   target <1 s")
        for p in Policies.all {
            var r: RunResult!
            let s = seconds { r = DigitalTwin(nodes: nodes, workload: w, kb: kb).run(policy: p) }
            print(p.name.padding(toLength: 14, withPad: " ", startingAt: 0) + String(format: "%7.3f  %9.0f  %9d   %@", s, Double(w.jobs.count) / s, r.events, s < 1 ? "met" : "NOT met"))
        }
        let perNode = 8
        let third = largeGPUs / 3 / perNode
        let big = "T4:\(third * perNode)/\(perNode),A100-80GB:\(third * perNode)/\(perNode),V100:\((largeGPUs / perNode - 2 * third) * perNode)/\(perNode)"
        let bigNodes = try ClusterSpec.parse(big)
        var g = TraceGenerator()
        g.jobsPerHour = Double(largeJobs) / g.hours
        let bw = try g.generate(seed: 2, kb: kb, maxGPUsPerNode: ["T4": perNode, "A100-80GB": perNode, "V100": perNode])
        print("\nlarge: \(bigNodes.map(\.gpuCount).reduce(0, +)) GPUs on \(bigNodes.count) nodes, \(bw.jobs.count) jobs")
        for p in largePolicies {
            var r: RunResult!
            let s = seconds { r = DigitalTwin(nodes: bigNodes, workload: bw, kb: kb).run(policy: p) }
            print(p.name.padding(toLength: 14, withPad: " ", startingAt: 0) + String(format: "%7.2f s  %9.0f jobs/s  %d events, %d/%d finished", s, Double(bw.jobs.count) / s, r.events, r.finished.count, r.jobs.count))
        }
    }

    /// Decision latency of one scheduling round with a queue of 2 jobs per node and the cluster
    /// half full, at each size; every round starts from the same state.
    public static func schedule(dataDirectory: String, sizes: [Int], rounds: Int, print: (String) -> Void) throws {
        let (kb, _, _) = KnowledgeSeeding.seeded(dataDirectory: dataDirectory, gpuModels: ["T4", "A100-80GB", "V100"])
        let w = try TraceGenerator().generate(seed: 3, kb: kb, maxGPUsPerNode: ["T4": 8, "A100-80GB": 8, "V100": 8])
        print("decision latency (one round, queue of 2 jobs per node, cluster half busy), \(rounds) rounds per size")
        print("nodes   policy          p50 ms    p99 ms   decisions")
        for n in sizes {
            for p in Policies.all {
                var base = Scheduler(policy: p, kb: kb)
                let models = ["T4", "A100-80GB", "V100"]
                for i in 0..<n { base.state.addNode(NodeSlot(id: String(format: "n%05d", i), gpuModel: models[i % 3], gpuCount: 8)) }
                // Half busy: one 4-GPU job on every node.
                for i in 0..<n {
                    let spec = JobSpec(id: "busy\(i)", kind: w.jobs[i % w.jobs.count].kind, arrival: 0, requestedGPUModel: nil, requestedGPUs: 4, work: 1e12, unit: "x")
                    base.state.submit(spec)
                    let node = String(format: "n%05d", i)
                    _ = try? base.state.start(job: spec.id, node: node, key: ConfigKey(model: spec.kind.model, task: spec.kind.task, gpuModel: models[i % 3], gpuCount: 4, batchPerGPU: spec.kind.batchPerGPU), at: 0)
                }
                for i in 0..<(2 * n) { var j = w.jobs[i % w.jobs.count]; j.id = "q\(i)"; j.arrival = Double(i); base.state.submit(j) }
                var samples: [Double] = [], decisions = 0
                for _ in 0..<rounds {
                    var s = base
                    var acts: [SchedulerAction] = []
                    samples.append(seconds { acts = s.step(now: 1e6) } * 1000)
                    decisions = acts.count
                }
                samples.sort()
                print(String(format: "%-7d ", n) + p.name.padding(toLength: 14, withPad: " ", startingAt: 0) + String(format: "%8.2f  %8.2f   %d", percentile(samples, 50), percentile(samples, 99), decisions))
            }
        }
    }
}
