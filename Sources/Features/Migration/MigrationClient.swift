import Cluster
import Foundation
import Protocol

/// The "migration" feature's operator API, for `strato migrations`, `strato request migrate`,
/// the experiment runner and tests.
extension OperatorClient {
    public func migration(_ request: MigrationApiRequest, timeoutMs: Int = 5000) throws -> MigrationApiReply {
        var m = FeatureMessage(); m.feature = MigrationHandler.feature; m.body = try request.serializedData()
        guard case .featureReply(let r) = try self.request(.featureRequest(m), timeoutMs: timeoutMs) else {
            throw OperatorClient.ClientError.unexpected("the coordinator answered a migration request with something else")
        }
        return try MigrationApiReply(serializedBytes: r.body)
    }

    /// Asks the coordinator to move a request to a replica of its service on `node`; the
    /// migration's record (its id, source and destination). Errors name what was wrong.
    public func migrate(request: String, to node: String, method: String = "") throws -> MigrationRecord {
        var m = MigrateByHand(); m.requestID = request; m.toNode = node; m.method = method
        var req = MigrationApiRequest(); req.migrate = m
        let reply = try migration(req)
        guard let r = reply.migrations.first else { throw OperatorClient.ClientError.unexpected("no migration in the reply") }
        return r
    }

    /// Migrations the coordinator knows of (in flight, and done too with `includeDone`).
    public func migrations(includeDone: Bool = true, limit: Int = 0, timeoutMs: Int = 5000) throws -> MigrationApiReply {
        var l = ListMigrations(); l.includeDone = includeDone; l.limit = UInt32(limit)
        var req = MigrationApiRequest(); req.list = l
        return try migration(req, timeoutMs: timeoutMs)
    }
}

/// The table `strato migrations` prints.
public enum MigrationTable {
    public static func render(_ reply: MigrationApiReply) -> String {
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
        var s = pad("MIGRATION", 10) + pad("REQUEST", 16) + pad("FROM", 14) + pad("TO", 14) + pad("METHOD", 10) + pad("REASON", 10)
        s += pad("STAGES", 7) + pad("MIB", 9) + pad("DOWNTIME", 10) + "OUTCOME\n"
        for r in reply.migrations {
            s += pad(r.migrationID, 10) + pad(r.requestID, 16) + pad(r.fromNode, 14) + pad(r.toNode, 14) + pad(r.method, 10) + pad(r.reason, 10)
            s += pad("\(r.stages)", 7) + pad(String(format: "%.2f", Double(r.bytes) / 1_048_576), 9)
            s += pad(r.downtimeSeconds >= 0 ? String(format: "%.1f ms", r.downtimeSeconds * 1000) : "-", 10)
            s += r.state + (r.detail.isEmpty ? "" : ": " + r.detail) + "\n"
        }
        let counts = reply.counts.filter { $0.key.hasPrefix("state/") }.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key.dropFirst(6))" }
        s += "\(reply.migrations.count) shown · policy \(reply.policy) · method \(reply.method)" + (counts.isEmpty ? "" : " · " + counts.joined(separator: ", ")) + "\n"
        s += reply.notes.joined(separator: "\n")
        return s
    }
}
