import Foundation
import Protocol
import Scheduling

/// Weights kept outside the GPU (feature "tiers", on memory hosts) for a model larger than its
/// GPUs: the source places the offloaded layers on a host and streams them every step. The
/// replicas call it; it answers on the session's thread.
public protocol WeightSource: AnyObject {
    /// A replica started whose layers beyond `plan.residentLayers` must be streamed; its engine
    /// starts no step until `EmulatedReplicas.weightsReady` is called.
    func replicaStarted(_ replica: String, model: InferenceModel, plan: WeightOffloadPlan, bytesScale: Double)
    func replicaStopped(_ replica: String)
}

extension EmulatedReplicas {
    /// The replica's offloaded layers are on a host and stream in `streamSeconds` a step (trace
    /// seconds): steps start again.
    public func weightsReady(replica: String, streamSeconds: Double, wallNanos: Int64) {
        guard let clock = replicas[replica]?.clock else { return }
        replicas[replica]!.engine.unstall(at: clock.trace(wall: wallNanos), streamSeconds: streamSeconds)
        tracer.instant("weights ready \(replica)", category: "tiers", track: "replicas",
                       args: ["replica": replica, "stream_s": String(format: "%.3f", streamSeconds), "emulated": "true"])
    }

    /// The host holding the replica's offloaded layers is gone: no step starts until they are
    /// placed again (requests wait; none is lost).
    public func weightsLost(replica: String, wallNanos: Int64) {
        guard let clock = replicas[replica]?.clock else { return }
        replicas[replica]!.engine.stall(at: clock.trace(wall: wallNanos))
        tracer.instant("weights lost \(replica)", category: "tiers", track: "replicas", args: ["replica": replica])
    }

    /// Steps the replica's engine has run by now, and trace seconds it stood still for its weights.
    public func weightProgress(replica: String, wallNanos: Int64) -> (steps: Int, stalledSeconds: Double)? {
        guard let clock = replicas[replica]?.clock else { return nil }
        replicas[replica]!.engine.advance(to: clock.trace(wall: wallNanos))
        let e = replicas[replica]!.engine
        return (e.steps, e.stalledSeconds)
    }
}
