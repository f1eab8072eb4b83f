import Cluster
import Foundation
import Protocol
import Scheduling

/// The inference replicas a GPU node serves, by emulation: each replica is a `ReplicaServer`
/// (continuous batching, iteration times from Vidur's profiles in the knowledge base) running on
/// the agent's wall clock scaled by the start command's time scale. A request is admitted when it
/// reaches the agent, so everything before that (the client, the coordinator's routing, the
/// network) counts in its latency too; it is reported once its emulated last token is out, and
/// repeated until the coordinator settles it. Results say `emulated`.
public final class EmulatedReplicas {
    let kb: KnowledgeBase

    struct Replica {
        var start: StartReplica
        var startedWall: Int64
        var server: ReplicaServer
        var gpus: Set<UInt32>
    }
    private var replicas: [String: Replica] = [:]
    /// Requests admitted and not yet finished, by emulated finish time (agent wall clock).
    private var inFlight: [RequestResult] = []
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
        replicas[s.replicaID] = Replica(start: s, startedWall: wallNanos, server: ReplicaServer(model: model, batch: Int(s.batch)), gpus: Set(s.gpus))
        tracer.instant("start replica \(s.replicaID)", category: "service", track: "replicas",
                              args: ["replica": s.replicaID, "service": s.serviceID, "gpus": s.gpus.map(String.init).joined(separator: ","),
                                     "batch": "\(s.batch)", "emulated": "true"])
        return (true, "serving \(s.serviceID) as \(s.replicaID) on GPUs \(s.gpus.map(String.init).joined(separator: ",")) (emulated)")
    }

    /// Stops a replica; the requests it still held are dropped (the coordinator re-sends them).
    public func stop(_ id: String, wallNanos: Int64) -> (ok: Bool, detail: String) {
        guard replicas.removeValue(forKey: id) != nil else { return (true, "replica \(id) not serving") }
        let dropped = inFlight.filter { $0.replicaID == id && $0.finishedAtUnixNanos > wallNanos }.count
        inFlight.removeAll { $0.replicaID == id && $0.finishedAtUnixNanos > wallNanos }
        tracer.instant("stop replica \(id)", category: "service", track: "replicas", args: ["replica": id, "dropped": "\(dropped)"])
        return (true, "stopped \(id); dropped \(dropped) unfinished requests")
    }

    public func serve(_ s: ServeRequests, wallNanos: Int64) -> (ok: Bool, detail: String) {
        guard var r = replicas[s.replicaID] else { return (false, "replica \(s.replicaID) is not serving here") }
        let scale = r.start.timeScale
        let t = TraceClock(zeroWall: r.startedWall, timeScale: scale).trace(wall: wallNanos)
        for q in s.requests {
            let (start, finish) = r.server.admit(at: t, prefill: Int(q.prefillTokens), decode: Int(q.decodeTokens))
            var res = RequestResult()
            res.requestID = q.requestID
            res.replicaID = s.replicaID
            res.receivedAtUnixNanos = wallNanos
            res.finishedAtUnixNanos = TraceClock(zeroWall: r.startedWall, timeScale: scale).wall(trace: finish)
            res.queuedSeconds = start - t
            res.serviceSeconds = finish - start
            res.emulated = true
            inFlight.append(res)
        }
        replicas[s.replicaID] = r
        return (true, "admitted \(s.requests.count)")
    }

    /// Moves what has finished by `wallNanos` to the results and returns the unsettled ones.
    public func results(wallNanos: Int64) -> [RequestResult] {
        var still: [RequestResult] = []
        for r in inFlight {
            if r.finishedAtUnixNanos <= wallNanos {
                if done[r.requestID] == nil { doneOrder.append(r.requestID) }
                done[r.requestID] = r
            } else {
                still.append(r)
            }
        }
        inFlight = still
        return doneOrder.prefix(maxResultsPerReport).compactMap { done[$0] }
    }

    /// Results go out at most every `reportBatchNanos` while requests are in flight, as they
    /// finish: the coordinator counts a replica's outstanding requests until it hears of them, so
    /// waiting for the next 200 ms heartbeat would hold back routing (at 200×, 40 trace seconds).
    public var reportBatchNanos: Int64 = 20_000_000

    /// When the next request finishes (not before `reportBatchNanos` from now), or nil.
    public func nextReportDue(wallNanos: Int64) -> Int64? {
        guard let first = inFlight.map(\.finishedAtUnixNanos).min() else { return nil }
        return max(first, wallNanos + reportBatchNanos)
    }

    public func settle(_ ids: [String]) {
        for id in ids { done[id] = nil }
        doneOrder.removeAll { done[$0] == nil }
    }
}
