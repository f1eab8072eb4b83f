import Foundation
import Scheduling

/// The configuration-performance database in the coordinator's SQLite store: one row per
/// (model, task, GPU model, count, layout, batch, origin), the row itself as JSON beside its key
/// columns (so `sqlite3 state.db` can still query it), and the derived facts.
extension StateStore {
    func ensureKnowledgeTables() throws {
        try db.execute("""
            CREATE TABLE IF NOT EXISTS perf (
                model TEXT NOT NULL, task TEXT NOT NULL, gpu TEXT NOT NULL, gpus INTEGER NOT NULL,
                layout TEXT NOT NULL, batch INTEGER NOT NULL, origin TEXT NOT NULL, fits INTEGER NOT NULL,
                source TEXT NOT NULL, row BLOB NOT NULL,
                PRIMARY KEY (model, task, gpu, gpus, layout, batch, origin));
            CREATE TABLE IF NOT EXISTS perf_facts (name TEXT NOT NULL, gpu TEXT NOT NULL, row BLOB NOT NULL, PRIMARY KEY (name, gpu));
            """)
    }

    /// Saves rows and facts (replacing rows with the same key and origin) in one transaction.
    public func saveKnowledge(rows: [PerfRow], facts: [KnowledgeFact] = []) throws {
        try ensureKnowledgeTables()
        let enc = JSONEncoder()
        try db.transaction {
            for r in rows {
                let k = r.key
                try db.run("""
                    INSERT INTO perf(model, task, gpu, gpus, layout, batch, origin, fits, source, row) VALUES(?,?,?,?,?,?,?,?,?,?)
                    ON CONFLICT(model, task, gpu, gpus, layout, batch, origin) DO UPDATE SET fits = excluded.fits, source = excluded.source, row = excluded.row
                    """, [.text(k.model), .text(k.task), .text(k.gpuModel), .int(Int64(k.gpuCount)), .text(k.layout), .int(Int64(k.batchPerGPU)),
                          .text(r.origin.rawValue), .int(r.fits ? 1 : 0), .text(r.source), .blob(Array(try enc.encode(r)))])
            }
            for f in facts {
                try db.run("INSERT INTO perf_facts(name, gpu, row) VALUES(?,?,?) ON CONFLICT(name, gpu) DO UPDATE SET row = excluded.row",
                           [.text(f.name), .text(f.gpuModel), .blob(Array(try enc.encode(f)))])
            }
        }
    }

    public func clearKnowledge(origin: RowOrigin? = nil) throws {
        try ensureKnowledgeTables()
        if let origin { try db.run("DELETE FROM perf WHERE origin = ?", [.text(origin.rawValue)]) } else { try db.run("DELETE FROM perf"); try db.run("DELETE FROM perf_facts") }
    }

    public func loadKnowledge() throws -> KnowledgeBase {
        try ensureKnowledgeTables()
        let dec = JSONDecoder()
        var rows: [PerfRow] = [], facts: [KnowledgeFact] = []
        for r in try db.run("SELECT row FROM perf") { if case .blob(let b) = r[0] { rows.append(try dec.decode(PerfRow.self, from: Data(b))) } }
        for r in try db.run("SELECT row FROM perf_facts") { if case .blob(let b) = r[0] { facts.append(try dec.decode(KnowledgeFact.self, from: Data(b))) } }
        return KnowledgeBase(rows: rows, facts: facts)
    }
}
