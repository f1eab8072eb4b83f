import Cluster
import Foundation
import Protocol
import Scheduling

/// The inference replicas a GPU node serves, by emulation: each replica is a `ServingEngine`
/// (iteration-level continuous batching over paged KV blocks, iteration times from Vidur's
/// profiles in the knowledge base) stepped on the agent's wall clock scaled by the start command's
/// time scale. A request joins the engine when it reaches the agent, so everything before that
/// (the client, the coordinator's routing, the network) counts in its latency too; it is reported
/// once its emulated last token is out, with its time to first token and between tokens, and
/// repeated until the coordinator settles it. Results say `emulated`.
public final class EmulatedReplicas {
    let kb: KnowledgeBase

    struct Replica {
        var start: StartReplica
        var startedWall: Int64
        var engine: ServingEngine
        var gpus: Set<UInt32>
        /// The engine's KV blocks as real bytes (nil when the start command asks for none).
        var pool: KVBlockPool?
        var clock: TraceClock { TraceClock(zeroWall: startedWall, timeScale: start.timeScale) }
    }
    private var replicas: [String: Replica] = [:]
    /// How each replica's engine preempts when KV blocks run out.
    public var preemption = ServingEngine.Preemption.recompute
    /// Finished results repeated until settled, in finishing order.
    private var done: [String: RequestResult] = [:]
    private var doneOrder: [String] = []
    /// Results per heartbeat, at most: a backlog goes out over several heartbeats.
    public var maxResultsPerReport = 4000

    /// The node's tracer (`FeatureHandler.attach`); a recorder of its own, off, until then.
    public var tracer = Tracer()

    public init(kb: KnowledgeBase) { self.kb = kb }

    public var replicaIDs: [String] { replicas.keys.sorted() }
    public func busyGPUs() -> Set<UInt32> { replicas.values.reduce(into: Set<UInt32>()) { $0.formUnion($1.gpus) } }

    public func start(_ s: StartReplica, nodeGPUModel: String, nodeGPUs: UInt32, busy: Set<UInt32>, wallNanos: Int64) -> (ok: Bool, detail: String) {
        if replicas[s.replicaID] != nil { return (true, "replica \(s.replicaID) already serving") }
        guard s.timeScale > 0, s.batch >= 1, !s.gpus.isEmpty else { return (false, "start_replica needs time_scale > 0, batch ≥ 1 and GPUs") }
        guard s.gpuModel == nodeGPUModel, s.gpus.allSatisfy({ $0 < nodeGPUs }) else {
            return (false, "start_replica for \(s.gpus.count)x\(s.gpuModel) GPUs \(s.gpus) does not match this node's \(nodeGPUs)x\(nodeGPUModel)")
        }
        let taken = Set(s.gpus).intersection(busy.union(busyGPUs()))
        guard taken.isEmpty else { return (false, "GPUs \(taken.sorted()) are busy on this node") }
        guard let model = InferenceModel(kb: kb, model: s.model, gpuModel: s.gpuModel, tensorParallel: s.gpus.count) else {
            return (false, "no inference profile for \(s.model) on \(s.gpus.count)x\(s.gpuModel)")
        }
        var config = ServingEngine.Config(maxRunning: Int(s.batch))
        config.preemption = preemption
        let pool = s.kvBytesScale > 0 ? KVBlockPool(fullBlockBytes: model.arch.kvBytesPerToken * Double(config.blockTokens) / Double(model.tensorParallel),
                                                    kvBytesScale: s.kvBytesScale) : nil
        replicas[s.replicaID] = Replica(start: s, startedWall: wallNanos, engine: ServingEngine(model: model, config: config), gpus: Set(s.gpus), pool: pool)
        tracer.instant("start replica \(s.replicaID)", category: "service", track: "replicas",
                              args: ["replica": s.replicaID, "service": s.serviceID, "gpus": s.gpus.map(String.init).joined(separator: ","),
                                     "batch": "\(s.batch)", "emulated": "true"])
        return (true, "serving \(s.serviceID) as \(s.replicaID) on GPUs \(s.gpus.map(String.init).joined(separator: ",")) (emulated)")
    }

    /// Stops a replica; the requests it still held are dropped (the coordinator re-sends them).
    public func stop(_ id: String, wallNanos: Int64) -> (ok: Bool, detail: String) {
        guard var r = replicas.removeValue(forKey: id) else { return (true, "replica \(id) not serving") }
        // What finished before the stop is still reported; the rest is dropped.
        collect(&r, wallNanos: wallNanos)
        let dropped = r.engine.load
        tracer.instant("stop replica \(id)", category: "service", track: "replicas", args: ["replica": id, "dropped": "\(dropped)"])
        return (true, "stopped \(id); dropped \(dropped) unfinished requests")
    }

    public func serve(_ s: ServeRequests, wallNanos: Int64) -> (ok: Bool, detail: String) {
        guard let clock = replicas[s.replicaID]?.clock else { return (false, "replica \(s.replicaID) is not serving here") }
        let t = clock.trace(wall: wallNanos)
        var refused: [String] = []
        // In place: a copy of the engine would copy its queues on every command.
        for q in s.requests {
            if let why = replicas[s.replicaID]!.engine.add(id: q.requestID, prompt: Int(q.prefillTokens), decode: Int(q.decodeTokens), at: t) { refused.append(why) }
        }
        replicas[s.replicaID]!.pool?.sync(replicas[s.replicaID]!.engine.blockCounts)
        if !refused.isEmpty { return (true, "admitted \(s.requests.count - refused.count); refused: " + refused.prefix(5).joined(separator: "; ")) }
        return (true, "admitted \(s.requests.count)")
    }

    /// Takes what the replica's engine finished by `wallNanos` into the results.
    private func collect(_ r: inout Replica, wallNanos: Int64) {
        let clock = r.clock
        for f in r.engine.takeFinished(by: clock.trace(wall: wallNanos)) {
            var res = RequestResult()
            res.requestID = f.id
            res.replicaID = r.start.replicaID
            res.receivedAtUnixNanos = clock.wall(trace: f.arrived)
            res.finishedAtUnixNanos = clock.wall(trace: f.finished)
            res.queuedSeconds = f.admitted - f.arrived
            res.serviceSeconds = f.finished - f.admitted
            res.ttftSeconds = f.ttft
            res.meanTbtSeconds = f.meanTBT
            res.maxTbtSeconds = f.maxTBT
            res.preemptions = UInt32(f.preemptions)
            res.emulated = true
            if done[f.id] == nil { doneOrder.append(f.id) }
            done[f.id] = res
        }
        r.pool?.sync(r.engine.blockCounts)
    }

    /// Real bytes the replicas' KV block pools hold now, and at most so far.
    public var kvBytesHeld: (now: Int, peak: Int) {
        replicas.values.reduce((0, 0)) { ($0.0 + ($1.pool?.bytesHeld ?? 0), $0.1 + ($1.pool?.peakBytesHeld ?? 0)) }
    }

    /// Steps every engine to `wallNanos` and returns the unsettled results.
    public func results(wallNanos: Int64) -> [RequestResult] {
        for id in replicas.keys { collect(&replicas[id]!, wallNanos: wallNanos) }
        return doneOrder.prefix(maxResultsPerReport).compactMap { done[$0] }
    }

    /// Results go out at most every `reportBatchNanos` while requests are in an engine, as they
    /// finish: the coordinator counts a replica's outstanding requests until it hears of them, so
    /// waiting for the next 200 ms heartbeat would hold back routing (at 200×, 40 trace seconds).
    public var reportBatchNanos: Int64 = 20_000_000

    /// When results may next be due (not before `reportBatchNanos` from now), or nil when every
    /// engine is idle.
    public func nextReportDue(wallNanos: Int64) -> Int64? {
        var due: Int64?
        for r in replicas.values where !r.engine.isIdle || r.engine.nextFinishAt != nil {
            let next = r.engine.nextFinishAt.map { r.clock.wall(trace: $0) } ?? wallNanos
            due = min(due ?? next, next)
        }
        return due.map { max($0, wallNanos + reportBatchNanos) }
    }

    public func settle(_ ids: [String]) {
        for id in ids { done[id] = nil }
        doneOrder.removeAll { done[$0] == nil }
    }
}
