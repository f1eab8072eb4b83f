import Cluster
import Coordinator
import Foundation
import Protocol

/// Feature "dataplane", coordinator side: starts probes between two nodes (the sender is told the
/// receiver's advertised endpoint and key) and keeps their results, which agents report until
/// settled. Probes are measurements, not state: results live in memory (the last 1,000).
public final class DataPlaneController: CoordinatorFeature {
    public let features = [DataPlaneHandler.feature]
    private var nextProbe = 0
    private var pending: [String: StartProbe] = [:]
    private var results: [String: ProbeResult] = [:]
    private var order: [String] = []

    public init() {}

    /// Starting a probe is an operator's; its status is a read.
    public func access(_ envelope: Envelope) -> AccessNeed {
        guard case .featureRequest(let m)? = envelope.body, let r = try? ProbeRequest(serializedBytes: m.body),
              case .status? = r.action else { return .operator }
        return .anyRole
    }

    public func handleRequest(_ envelope: Envelope, _ s: CoordinatorServices) -> Envelope.OneOf_Body? {
        guard case .featureRequest(let m)? = envelope.body else { return nil }
        guard let request = try? ProbeRequest(serializedBytes: m.body) else {
            return .error(Self.error(.invalidRequest, "the dataplane feature expects a ProbeRequest"))
        }
        var reply = ProbeReply()
        switch request.action {
        case .start(let p)?:
            if let problem = problem(with: p, s) { return .error(Self.error(.invalidRequest, problem)) }
            let to = s.membership.nodes[p.toNode]!.info
            nextProbe += 1
            let id = "probe-\(s.counter("probes_started") + 1)-\(nextProbe)"
            var c = ProbeCommand()
            c.probeID = id; c.peerNode = p.toNode; c.peerEndpoint = to.dataEndpoint; c.peerPublicKey = to.dataPublicKey
            c.bytes = p.bytes; c.chunkBytes = p.chunkBytes
            do { try s.enqueue(.feature(DataPlaneHandler.feature, node: p.fromNode, c)) } catch {
                return .error(Self.error(.invalidRequest, "could not persist the probe command: \(error)"))
            }
            s.count("probes_started")
            s.event(p.fromNode, "probe", "\(id): \(p.bytes) bytes to \(p.toNode)")
            pending[id] = p
            reply.probeID = id
        case .status(let st)?:
            reply.results = order.filter { st.probeID.isEmpty || $0 == st.probeID }.compactMap { results[$0] }
            reply.pending = pending.keys.sorted().filter { st.probeID.isEmpty || $0 == st.probeID }
        case nil:
            return .error(Self.error(.invalidRequest, "a ProbeRequest with no action"))
        }
        var out = FeatureMessage(); out.feature = DataPlaneHandler.feature; out.body = (try? reply.serializedData()) ?? Data()
        return .featureReply(out)
    }

    private func problem(with p: StartProbe, _ s: CoordinatorServices) -> String? {
        guard p.bytes > 0, p.bytes <= 1 << 40 else { return "bytes must be between 1 and 1 TiB (got \(p.bytes))" }
        for (role, id) in [("from", p.fromNode), ("to", p.toNode)] {
            guard let n = s.membership.nodes[id] else { return "no node '\(id)' (\(role)); see `strato status`" }
            guard n.info.state == .alive else { return "node '\(id)' (\(role)) is \(n.info.state)" }
            guard !n.info.dataEndpoint.isEmpty else { return "node '\(id)' (\(role)) has no data plane (started with --data-endpoint none?)" }
        }
        return p.fromNode == p.toNode ? "a probe needs two different nodes" : nil
    }

    public func reports(_ reports: [FeatureReport], feature: String, from nodeID: String, clockOffsetNanos: Int64, _ s: CoordinatorServices) -> [String] {
        var settled: [String] = []
        for r in reports {
            guard var result = try? ProbeResult(serializedBytes: r.body) else { s.count("malformed_probe_results"); continue }
            result.fromNode = nodeID
            if results[r.key] == nil { order.append(r.key) }
            results[r.key] = result
            pending[r.key] = nil
            settled.append(r.key)
            if order.count > 1000 { results[order.removeFirst()] = nil }
        }
        return settled
    }

    public func acknowledged(_ command: Command, _ feature: FeatureCommand, ack: CommandAck, _ s: CoordinatorServices) {
        guard !ack.ok, let c = try? ProbeCommand(serializedBytes: feature.body) else { return }
        var r = ProbeResult()
        r.probeID = c.probeID; r.fromNode = command.nodeID; r.toNode = c.peerNode; r.ok = false; r.error = ack.detail
        pending[c.probeID] = nil
        if results[c.probeID] == nil { order.append(c.probeID) }
        results[c.probeID] = r
    }

    static func error(_ code: ErrorCode, _ message: String) -> ErrorReply {
        var e = ErrorReply(); e.code = code; e.message = message; return e
    }
}
