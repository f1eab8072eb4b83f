import Scheduling

/// Feature "inference" in the digital twin: the replicas GPU agents serve, on virtual time (trace
/// seconds). Each replica is the `ReplicaServer` the agent's `EmulatedReplicas` runs (continuous
/// batching from Vidur's profiles); the twin routes with the coordinator's `RequestRouter`, so only
/// the agents are modelled. A replica's life ends when it is stopped or its node crashes: results
/// finished by then still count (the agent reports them), later ones are lost, and requests sent
/// to a crashed node's replica vanish until the failure detector tells the router.
public struct InferenceTwinModel {
    /// A request's emulated result, due at `completion.finished`.
    public struct Finish {
        public var completion: RequestRouter.Completion
        public var node: String
        let life: Int
    }
    struct Replica { var server: ReplicaServer; var node: String; var life: Int }

    private var replicas: [String: Replica] = [:]
    /// When each replica life ended (stopped or crashed), by life number.
    private var endedAt: [Int: Double] = [:]
    private var lives = 0

    public init() {}

    public var replicaIDs: [String] { replicas.keys.sorted() }

    public mutating func start(_ id: String, node: String, model: InferenceModel, batch: Int) {
        guard replicas[id] == nil else { return }
        lives += 1
        replicas[id] = Replica(server: ReplicaServer(model: model, batch: batch), node: node, life: lives)
    }

    public mutating func stop(_ id: String, at now: Double) {
        guard let r = replicas.removeValue(forKey: id) else { return }
        endedAt[r.life] = now
    }

    /// The node crashed: its replicas answer nothing from now on (the router still sends to them
    /// until it learns of the failure).
    public mutating func nodeCrashed(_ node: String, at now: Double) {
        for r in replicas.values where r.node == node && endedAt[r.life] == nil { endedAt[r.life] = now }
    }

    /// Admits requests that reach `replica` at `t`; returns their results, each due when its last
    /// token is out. Nothing for a replica that is gone or whose node crashed.
    public mutating func serve(_ replica: String, _ requests: [ServiceRequest], at t: Double) -> [Finish] {
        guard var r = replicas[replica], endedAt[r.life] == nil else { return [] }
        let out = requests.map { q -> Finish in
            let (start, finish) = r.server.admit(at: t, prefill: q.prefill, decode: q.decode)
            return Finish(completion: RequestRouter.Completion(requestID: q.id, replicaID: replica, finished: finish, queued: start - t, service: finish - start),
                          node: r.node, life: r.life)
        }
        replicas[replica] = r
        return out
    }

    /// Whether the agent delivers this result: its replica was still serving when it finished.
    public func delivers(_ f: Finish) -> Bool {
        guard let end = endedAt[f.life] else { return true }
        return f.completion.finished <= end
    }
}
