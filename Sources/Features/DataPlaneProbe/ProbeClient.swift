import Cluster
import Foundation
import Protocol

/// The "dataplane" feature's operator API, for `strato dataplane probe` and tests.
extension OperatorClient {
    public func probe(_ request: ProbeRequest, timeoutMs: Int = 5000) throws -> ProbeReply {
        var m = FeatureMessage(); m.feature = DataPlaneHandler.feature; m.body = try request.serializedData()
        guard case .featureReply(let r) = try self.request(.featureRequest(m), timeoutMs: timeoutMs) else {
            throw OperatorClient.ClientError.unexpected("the coordinator answered a probe request with something else")
        }
        return try ProbeReply(serializedBytes: r.body)
    }

    /// Starts a probe and waits for its result (or `timeoutSeconds`).
    public func runProbe(from: String, to: String, bytes: UInt64, chunkBytes: UInt32 = 0, timeoutSeconds: Double = 60) throws -> ProbeResult {
        var start = StartProbe(); start.fromNode = from; start.toNode = to; start.bytes = bytes; start.chunkBytes = chunkBytes
        var req = ProbeRequest(); req.start = start
        let id = try probe(req).probeID
        var status = ProbeStatus(); status.probeID = id
        var ask = ProbeRequest(); ask.status = status
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            if let r = try probe(ask).results.first { return r }
            usleep(50_000)
        }
        throw OperatorClient.ClientError.unexpected("probe \(id) had no result after \(Int(timeoutSeconds)) s")
    }
}
