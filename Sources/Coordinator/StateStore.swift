import Cluster
import Foundation
import Protocol
import SwiftProtobuf

/// The coordinator's durable state: an SQLite database in write-ahead-log mode under the state
/// directory. Everything the coordinator acknowledges is committed first, so a coordinator killed
/// with SIGKILL and restarted on the same directory loses nothing it said it had.
///
/// **Ownership:** the coordinator's control loop thread.
public final class StateStore {
    public let directory: String
    let db: SQLiteDatabase
    /// The connection, for features' own tables (their schemas are created when the store opens)
    /// inside the loop turn's transaction.
    public var database: SQLiteDatabase { db }

    /// A pending command as stored: the command and how often it was sent.
    public struct StoredCommand {
        public var command: Command
        public var attempts: Int
    }

    /// 2: requests carry time to first token, time between tokens and engine preemptions.
    /// 3: requests carry their priority and how often they migrated.
    public static let schemaVersion: Int64 = 3

    /// Opens (or creates) the store; `schemas` are the hosted features' tables (`CREATE TABLE IF
    /// NOT EXISTS …`), created here with the shell's own, so no feature creates tables lazily.
    public init(directory: String, schemas: [String] = []) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        db = try SQLiteDatabase(path: directory + "/state.db")
        try db.execute("PRAGMA journal_mode=WAL")
        // NORMAL is durable against process crashes (SIGKILL) in WAL mode; FULL would also cover
        // power loss at the cost of an fsync per commit.
        try db.execute("PRAGMA synchronous=NORMAL")
        try db.execute("""
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS nodes (
                id TEXT PRIMARY KEY, instance TEXT NOT NULL, incarnation INTEGER NOT NULL,
                state INTEGER NOT NULL, last_heard_wall INTEGER NOT NULL, record BLOB NOT NULL);
            CREATE TABLE IF NOT EXISTS commands (
                id INTEGER PRIMARY KEY, node_id TEXT NOT NULL, body BLOB NOT NULL, attempts INTEGER NOT NULL,
                created_at INTEGER NOT NULL, acked_at INTEGER, ok INTEGER, detail TEXT);
            CREATE TABLE IF NOT EXISTS events (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, node_id TEXT NOT NULL,
                kind TEXT NOT NULL, detail TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
            """)
        try db.transaction { for s in schemas { try db.execute(s) } }
        let version = try meta("schema_version")
        if version == 0 {
            try setMeta("schema_version", StateStore.schemaVersion)
        } else if version != StateStore.schemaVersion {
            throw SQLiteError(code: 0, message: "state directory \(directory) has schema version \(version); this build reads version \(StateStore.schemaVersion)", sql: "")
        }
    }

    // MARK: Meta

    public func meta(_ key: String) throws -> Int64 {
        try db.run("SELECT value FROM meta WHERE key = ?", [.text(key)]).first?.first?.int ?? 0
    }

    public func setMeta(_ key: String, _ value: Int64) throws {
        try db.run("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                   [.text(key), .int(value)])
    }

    /// Increments and returns the coordinator epoch; called once per coordinator start.
    public func nextEpoch() throws -> UInt64 {
        let epoch = try meta("epoch") + 1
        try setMeta("epoch", epoch)
        return UInt64(epoch)
    }

    /// Reserves the next command id durably.
    public func nextCommandID() throws -> UInt64 {
        let id = try meta("next_command_id") + 1
        try setMeta("next_command_id", id)
        return UInt64(id)
    }

    // MARK: Nodes

    public func save(_ records: [NodeRecord]) throws {
        guard !records.isEmpty else { return }
        try db.transaction {
            for r in records {
                var status = r.status
                status.lastHeartbeatAgeNanos = 0
                try db.run("""
                    INSERT INTO nodes(id, instance, incarnation, state, last_heard_wall, record) VALUES(?,?,?,?,?,?)
                    ON CONFLICT(id) DO UPDATE SET instance=excluded.instance, incarnation=excluded.incarnation,
                      state=excluded.state, last_heard_wall=excluded.last_heard_wall, record=excluded.record
                    """, [.text(r.id), .text(r.instanceID), .int(Int64(r.info.incarnation)),
                          .int(Int64(r.info.state.rawValue)), .int(r.lastHeardWall),
                          .blob(try status.serializedBytes())])
            }
        }
    }

    public func loadNodes() throws -> [NodeRecord] {
        try db.run("SELECT instance, last_heard_wall, record FROM nodes ORDER BY id").map { row in
            let status = try NodeStatus(serializedBytes: row[2].blob)
            return NodeRecord(status: status, instanceID: row[0].text, lastHeardMono: nil,
                              lastHeardWall: row[1].int, confirmed: false)
        }
    }

    // MARK: Commands

    public func savePending(_ command: Command, attempts: Int, at: Int64) throws {
        try db.run("""
            INSERT INTO commands(id, node_id, body, attempts, created_at) VALUES(?,?,?,?,?)
            ON CONFLICT(id) DO UPDATE SET attempts = excluded.attempts
            """, [.int(Int64(command.commandID)), .text(command.nodeID), .blob(try command.serializedBytes()),
                  .int(Int64(attempts)), .int(at)])
    }

    public func markAcknowledged(_ ack: CommandAck, at: Int64) throws {
        try db.run("UPDATE commands SET acked_at = ?, ok = ?, detail = ? WHERE id = ? AND acked_at IS NULL",
                   [.int(at), .int(ack.ok ? 1 : 0), .text(ack.detail), .int(Int64(ack.commandID))])
    }

    public func loadPendingCommands() throws -> [StoredCommand] {
        try db.run("SELECT body, attempts FROM commands WHERE acked_at IS NULL ORDER BY id").map {
            StoredCommand(command: try Command(serializedBytes: $0[0].blob), attempts: Int($0[1].int))
        }
    }

    /// (id, node, ok, detail) of acknowledged commands, newest first.
    public func acknowledgedCommands(limit: Int = 100) throws -> [(UInt64, String, Bool, String)] {
        try db.run("SELECT id, node_id, ok, detail FROM commands WHERE acked_at IS NOT NULL ORDER BY id DESC LIMIT ?",
                   [.int(Int64(limit))]).map { (UInt64($0[0].int), $0[1].text, $0[2].int != 0, $0[3].text) }
    }

    // MARK: Events and counters

    public struct Event {
        public var at: Int64
        public var nodeID: String
        public var kind: String
        public var detail: String
        public init(at: Int64, nodeID: String, kind: String, detail: String) {
            self.at = at; self.nodeID = nodeID; self.kind = kind; self.detail = detail
        }
    }

    public func append(_ events: [Event]) throws {
        guard !events.isEmpty else { return }
        try db.transaction {
            for e in events {
                try db.run("INSERT INTO events(at, node_id, kind, detail) VALUES(?,?,?,?)",
                           [.int(e.at), .text(e.nodeID), .text(e.kind), .text(e.detail)])
            }
        }
    }

    public func events(nodeID: String? = nil) throws -> [Event] {
        let rows = try nodeID.map { try db.run("SELECT at, node_id, kind, detail FROM events WHERE node_id = ? ORDER BY seq", [.text($0)]) }
            ?? db.run("SELECT at, node_id, kind, detail FROM events ORDER BY seq")
        return rows.map { Event(at: $0[0].int, nodeID: $0[1].text, kind: $0[2].text, detail: $0[3].text) }
    }

    public func saveCounters(_ counters: [String: UInt64]) throws {
        try db.transaction {
            for (name, value) in counters {
                try db.run("INSERT INTO counters(name, value) VALUES(?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                           [.text(name), .int(Int64(value))])
            }
        }
    }

    public func loadCounters() throws -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for row in try db.run("SELECT name, value FROM counters") { out[row[0].text] = UInt64(row[1].int) }
        return out
    }

    /// Several writes as one transaction (one fsync-free WAL commit).
    public func batch(_ body: () throws -> Void) throws { try db.transaction(body) }
}
