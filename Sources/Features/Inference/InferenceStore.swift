import Coordinator
import Foundation
import Scheduling

/// Online services in the store: each accepted service, each placed replica (and whether its agent
/// acknowledged it), and every accepted inference request with its result once it has one. A
/// request is stored before the client is told it was accepted, and a result before the agent is
/// told to forget it, so neither a coordinator crash nor an agent crash loses one.
extension StateStore {
    static let serviceSchema = """
            CREATE TABLE IF NOT EXISTS services (id TEXT PRIMARY KEY, spec BLOB NOT NULL);
            CREATE TABLE IF NOT EXISTS replicas (id TEXT PRIMARY KEY, record BLOB NOT NULL, ready INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS requests (
                id TEXT PRIMARY KEY, service TEXT NOT NULL, arrival REAL NOT NULL, prefill INTEGER NOT NULL,
                decode INTEGER NOT NULL, attempts INTEGER NOT NULL, replica TEXT, node TEXT, finished REAL,
                latency REAL, queued REAL, service_seconds REAL, within_slo INTEGER NOT NULL,
                ttft REAL, mean_tbt REAL NOT NULL DEFAULT 0, max_tbt REAL NOT NULL DEFAULT 0, preemptions INTEGER NOT NULL DEFAULT 0,
                high_priority INTEGER NOT NULL DEFAULT 0, migrations INTEGER NOT NULL DEFAULT 0);
            """

    func saveService(_ s: ServiceSpec) throws {
        try database.run("INSERT OR REPLACE INTO services(id, spec) VALUES(?,?)", [.text(s.id), .blob(Array(try JSONEncoder().encode(s)))])
    }

    func loadServices() throws -> [ServiceSpec] {
        try database.run("SELECT spec FROM services ORDER BY id").map { try JSONDecoder().decode(ServiceSpec.self, from: Data($0[0].blob)) }
    }

    func saveReplica(_ r: ReplicaRecord, ready: Bool) throws {
        try database.run("INSERT OR REPLACE INTO replicas(id, record, ready) VALUES(?,?,?)",
                   [.text(r.id), .blob(Array(try JSONEncoder().encode(r))), .int(ready ? 1 : 0)])
    }

    func deleteReplica(_ id: String) throws { try database.run("DELETE FROM replicas WHERE id = ?", [.text(id)]) }

    func loadReplicas() throws -> [(ReplicaRecord, ready: Bool)] {
        return try database.run("SELECT record, ready FROM replicas ORDER BY id").map {
            (try JSONDecoder().decode(ReplicaRecord.self, from: Data($0[0].blob)), $0[1].int != 0)
        }
    }

    func saveRequests(_ records: [RequestRouter.Record]) throws {
        for r in records {
            let q = r.request
            try database.run("""
                INSERT INTO requests(id, service, arrival, prefill, decode, attempts, replica, node, finished, latency, queued, service_seconds, within_slo,
                                     ttft, mean_tbt, max_tbt, preemptions, high_priority, migrations)
                VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                ON CONFLICT(id) DO UPDATE SET attempts = excluded.attempts, replica = excluded.replica, node = excluded.node,
                  finished = excluded.finished, latency = excluded.latency, queued = excluded.queued,
                  service_seconds = excluded.service_seconds, within_slo = excluded.within_slo, ttft = excluded.ttft,
                  mean_tbt = excluded.mean_tbt, max_tbt = excluded.max_tbt, preemptions = excluded.preemptions,
                  migrations = excluded.migrations
                """, [.text(q.id), .text(q.serviceID), .real(q.arrival), .int(Int64(q.prefill)), .int(Int64(q.decode)),
                      .int(Int64(r.attempts)), r.replica.map { .text($0) } ?? .null, r.node.map { .text($0) } ?? .null,
                      r.finished.map { .real($0) } ?? .null, r.latency.map { .real($0) } ?? .null,
                      .real(r.queued), .real(r.service), .int(r.withinSLO ? 1 : 0),
                      r.ttft.map { .real($0) } ?? .null, .real(r.meanTBT), .real(r.maxTBT), .int(Int64(r.preemptions)),
                      .int(q.highPriority ? 1 : 0), .int(Int64(r.migrations))])
        }
    }

    func loadRequests() throws -> [RequestRouter.Record] {
        return try database.run("""
            SELECT id, service, arrival, prefill, decode, attempts, replica, node, finished, latency, queued, service_seconds, within_slo,
                   ttft, mean_tbt, max_tbt, preemptions, high_priority, migrations
            FROM requests ORDER BY arrival, id
            """).map { c in
            var r = RequestRouter.Record(request: ServiceRequest(id: c[0].text, serviceID: c[1].text, arrival: c[2].real,
                                                                 prefill: Int(c[3].int), decode: Int(c[4].int), highPriority: c[17].int != 0))
            r.attempts = Int(c[5].int)
            r.replica = c[6].optionalText
            r.node = c[7].optionalText
            r.finished = c[8].optionalReal
            r.latency = c[9].optionalReal
            r.queued = c[10].real
            r.service = c[11].real
            r.withinSLO = c[12].int != 0
            r.ttft = c[13].optionalReal
            r.meanTBT = c[14].real
            r.maxTBT = c[15].real
            r.preemptions = Int(c[16].int)
            r.migrations = Int(c[18].int)
            return r
        }
    }
}
