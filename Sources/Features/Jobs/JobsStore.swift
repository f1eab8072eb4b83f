import Coordinator
import Foundation
import Protocol
import Scheduling

/// The configuration-performance database in the coordinator's SQLite store: one row per
/// (model, task, GPU model, count, layout, batch, origin), the row itself as JSON beside its key
/// columns (so `sqlite3 state.db` can still query it), and the derived facts.
extension StateStore {
    static let knowledgeSchema = """
            CREATE TABLE IF NOT EXISTS perf (
                model TEXT NOT NULL, task TEXT NOT NULL, gpu TEXT NOT NULL, gpus INTEGER NOT NULL,
                layout TEXT NOT NULL, batch INTEGER NOT NULL, origin TEXT NOT NULL, fits INTEGER NOT NULL,
                source TEXT NOT NULL, row BLOB NOT NULL,
                PRIMARY KEY (model, task, gpu, gpus, layout, batch, origin));
            CREATE TABLE IF NOT EXISTS perf_facts (name TEXT NOT NULL, gpu TEXT NOT NULL, row BLOB NOT NULL, PRIMARY KEY (name, gpu));
            """

    /// Saves rows and facts (replacing rows with the same key and origin) in one transaction.
    public func saveKnowledge(rows: [PerfRow], facts: [KnowledgeFact] = []) throws {
        let enc = JSONEncoder()
        try database.transaction {
            for r in rows {
                let k = r.key
                try database.run("""
                    INSERT INTO perf(model, task, gpu, gpus, layout, batch, origin, fits, source, row) VALUES(?,?,?,?,?,?,?,?,?,?)
                    ON CONFLICT(model, task, gpu, gpus, layout, batch, origin) DO UPDATE SET fits = excluded.fits, source = excluded.source, row = excluded.row
                    """, [.text(k.model), .text(k.task), .text(k.gpuModel), .int(Int64(k.gpuCount)), .text(k.layout), .int(Int64(k.batchPerGPU)),
                          .text(r.origin.rawValue), .int(r.fits ? 1 : 0), .text(r.source), .blob(Array(try enc.encode(r)))])
            }
            for f in facts {
                try database.run("INSERT INTO perf_facts(name, gpu, row) VALUES(?,?,?) ON CONFLICT(name, gpu) DO UPDATE SET row = excluded.row",
                           [.text(f.name), .text(f.gpuModel), .blob(Array(try enc.encode(f)))])
            }
        }
    }

    public func clearKnowledge(origin: RowOrigin? = nil) throws {
        if let origin { try database.run("DELETE FROM perf WHERE origin = ?", [.text(origin.rawValue)]) } else { try database.run("DELETE FROM perf"); try database.run("DELETE FROM perf_facts") }
    }

    public func loadKnowledge() throws -> KnowledgeBase {
        let dec = JSONDecoder()
        var rows: [PerfRow] = [], facts: [KnowledgeFact] = []
        for r in try database.run("SELECT row FROM perf") { if case .blob(let b) = r[0] { rows.append(try dec.decode(PerfRow.self, from: Data(b))) } }
        for r in try database.run("SELECT row FROM perf_facts") { if case .blob(let b) = r[0] { facts.append(try dec.decode(KnowledgeFact.self, from: Data(b))) } }
        return KnowledgeBase(rows: rows, facts: facts)
    }
}

/// Offline jobs in the store: one row per job (its scheduler record as JSON), written before the
/// coordinator acts on a change; future submissions kept apart until they arrive.
extension StateStore {
    static let jobSchema = """
            CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, phase TEXT NOT NULL, record BLOB NOT NULL);
            CREATE TABLE IF NOT EXISTS future_jobs (id TEXT PRIMARY KEY, spec BLOB NOT NULL);
            """

    func saveJobs(_ records: [JobRecord]) throws {
        let enc = JSONEncoder()
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        for r in records {
            try database.run("INSERT INTO jobs(id, phase, record) VALUES(?,?,?) ON CONFLICT(id) DO UPDATE SET phase = excluded.phase, record = excluded.record",
                       [.text(r.spec.id), .text(r.phase.rawValue), .blob(Array(try enc.encode(r)))])
            try database.run("DELETE FROM future_jobs WHERE id = ?", [.text(r.spec.id)])
        }
    }

    func saveFutureJobs(_ specs: [JobSpec]) throws {
        let enc = JSONEncoder()
        for s in specs { try database.run("INSERT OR REPLACE INTO future_jobs(id, spec) VALUES(?,?)", [.text(s.id), .blob(Array(try enc.encode(s)))]) }
    }

    func loadJobs() throws -> (future: [JobSpec], records: [JobRecord]) {
        let dec = JSONDecoder()
        dec.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        var f: [JobSpec] = [], r: [JobRecord] = []
        for row in try database.run("SELECT spec FROM future_jobs") { f.append(try dec.decode(JobSpec.self, from: Data(row[0].blob))) }
        for row in try database.run("SELECT record FROM jobs") { r.append(try dec.decode(JobRecord.self, from: Data(row[0].blob))) }
        return (f, r)
    }

    func metaValue(_ key: String) throws -> Int64 { try meta(key) }
    func setMetaValue(_ key: String, _ v: Int64) throws { try setMeta(key, v) }
}

extension StateStore {
    /// The newest start_job command id per job (acknowledged or not), to tell current runs from old ones.
    func lastStartCommands() throws -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for row in try database.run("SELECT id, body FROM commands ORDER BY id") {
            guard let c = try? Command(serializedBytes: row[1].blob), let s = SchedulingController.startJob(in: c) else { continue }
            out[s.jobID] = UInt64(row[0].int)
        }
        return out
    }
}
