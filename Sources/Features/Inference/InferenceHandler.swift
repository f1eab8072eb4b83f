import Cluster
import Foundation
import Protocol

/// Feature "inference", agent side: serves replicas of online services on a GPU node (emulated,
/// `EmulatedReplicas`), answers `InferenceCommand`s, and reports each finished request as a
/// `FeatureReport` (key = request id, body = `RequestResult`) until settled. A replica only takes
/// GPUs no job holds (`busyElsewhere`).
public final class InferenceHandler: FeatureHandler {
    public static let feature = "inference"
    public var feature: String { InferenceHandler.feature }
    public let replicas: EmulatedReplicas
    let gpuModel: String
    let gpuCount: UInt32
    /// GPUs other features (jobs) hold on this node.
    let busyElsewhere: () -> Set<UInt32>

    public init(replicas: EmulatedReplicas, gpuModel: String, gpuCount: UInt32, busyElsewhere: @escaping () -> Set<UInt32>) {
        self.replicas = replicas
        self.gpuModel = gpuModel
        self.gpuCount = gpuCount
        self.busyElsewhere = busyElsewhere
    }

    public func attach(_ context: NodeContext) { replicas.tracer = context.tracer }

    public func execute(_ body: [UInt8], commandID: UInt64, wallNanos: Int64) -> FeatureOutcome {
        guard let command = try? InferenceCommand(serializedBytes: body) else { return .refused("not an InferenceCommand") }
        let r: (ok: Bool, detail: String)
        switch command.action {
        case .startReplica(let s)?:
            r = replicas.start(s, nodeGPUModel: gpuModel, nodeGPUs: gpuCount, busy: busyElsewhere(), wallNanos: wallNanos)
        case .stopReplica(let s)?:
            r = replicas.stop(s.replicaID, wallNanos: wallNanos)
        case .serveRequests(let s)?:
            r = replicas.serve(s, wallNanos: wallNanos)
        case nil:
            return .refused("an InferenceCommand with no action")
        }
        return FeatureOutcome(ok: r.ok, detail: r.detail)
    }

    public func reports(wallNanos: Int64) -> [FeatureReport] {
        replicas.results(wallNanos: wallNanos).map { report(key: $0.requestID, $0) }
    }

    public func settle(_ keys: [String]) { replicas.settle(keys) }
    public func nextReportDue(wallNanos: Int64) -> Int64? { replicas.nextReportDue(wallNanos: wallNanos) }
    public func running() -> [String] { replicas.replicaIDs }
    public var busyGPUs: Set<UInt32> { replicas.busyGPUs() }
}
