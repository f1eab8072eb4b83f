import CSQLite
import Foundation

/// A failed SQLite call, with SQLite's own message and the statement that failed.
public struct SQLiteError: Error, CustomStringConvertible {
    public let code: Int32
    public let message: String
    public let sql: String
    public var description: String { "SQLite error \(code): \(message) [\(sql)]" }
}

/// A minimal SQLite connection. **Ownership:** one thread at a time (the coordinator's loop).
/// Features reach it through `StateStore.database` for their own tables.
public final class SQLiteDatabase {
    private var db: OpaquePointer?
    private var statements: [String: OpaquePointer] = [:]

    init(path: String) throws {
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        if rc != SQLITE_OK {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close(db)
            throw SQLiteError(code: rc, message: message, sql: "open \(path)")
        }
        sqlite3_busy_timeout(db, 5000)
    }

    deinit {
        for (_, s) in statements { sqlite3_finalize(s) }
        sqlite3_close(db)
    }

    public func execute(_ sql: String) throws {
        var err: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &err)
        if rc != SQLITE_OK {
            let message = err.map { String(cString: $0) } ?? "unknown"
            sqlite3_free(err)
            throw SQLiteError(code: rc, message: message, sql: sql)
        }
    }

    public enum Value {
        case int(Int64), real(Double), text(String), blob([UInt8]), null
    }

    /// Runs a statement (cached and reused) with positional bindings; returns the rows.
    @discardableResult
    public func run(_ sql: String, _ values: [Value] = []) throws -> [[Value]] {
        let stmt = try prepared(sql)
        defer { sqlite3_reset(stmt); sqlite3_clear_bindings(stmt) }
        for (i, v) in values.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch v {
            case .int(let x): rc = sqlite3_bind_int64(stmt, index, x)
            case .real(let x): rc = sqlite3_bind_double(stmt, index, x)
            case .text(let s): rc = sqlite3_bind_text(stmt, index, s, -1, SQLITE_TRANSIENT)
            case .blob(let b):
                rc = b.withUnsafeBytes { sqlite3_bind_blob(stmt, index, $0.baseAddress, Int32($0.count), SQLITE_TRANSIENT) }
            case .null: rc = sqlite3_bind_null(stmt, index)
            }
            if rc != SQLITE_OK { throw error(rc, sql) }
        }
        var rows: [[Value]] = []
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { break }
            if rc != SQLITE_ROW { throw error(rc, sql) }
            var row: [Value] = []
            for c in 0..<sqlite3_column_count(stmt) {
                switch sqlite3_column_type(stmt, c) {
                case SQLITE_INTEGER: row.append(.int(sqlite3_column_int64(stmt, c)))
                case SQLITE_FLOAT: row.append(.real(sqlite3_column_double(stmt, c)))
                case SQLITE_TEXT: row.append(.text(String(cString: sqlite3_column_text(stmt, c))))
                case SQLITE_BLOB:
                    let n = Int(sqlite3_column_bytes(stmt, c))
                    if n == 0 { row.append(.blob([])) } else {
                        row.append(.blob(Array(UnsafeRawBufferPointer(start: sqlite3_column_blob(stmt, c), count: n))))
                    }
                default: row.append(.null)
                }
            }
            rows.append(row)
        }
        return rows
    }

    private var transactionDepth = 0

    /// Runs `body` in a transaction. A nested call is a savepoint inside the outer transaction:
    /// if its body throws, only its own writes are undone and the outer transaction goes on.
    public func transaction(_ body: () throws -> Void) throws {
        if transactionDepth > 0 {
            let name = "s\(transactionDepth)"
            try execute("SAVEPOINT \(name)")
            transactionDepth += 1
            defer { transactionDepth -= 1 }
            do {
                try body()
                try execute("RELEASE \(name)")
            } catch {
                try? execute("ROLLBACK TO \(name)")
                try? execute("RELEASE \(name)")
                throw error
            }
            return
        }
        try execute("BEGIN IMMEDIATE")
        transactionDepth = 1
        defer { transactionDepth = 0 }
        do {
            try body()
            try execute("COMMIT")
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    private func prepared(_ sql: String) throws -> OpaquePointer {
        if let s = statements[sql] { return s }
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v2(db, sql, -1, &stmt, nil)
        guard rc == SQLITE_OK, let s = stmt else { throw error(rc, sql) }
        statements[sql] = s
        return s
    }

    private func error(_ rc: Int32, _ sql: String) -> SQLiteError {
        SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(db)), sql: sql)
    }
}

// SQLITE_TRANSIENT is a macro over a cast of -1; Swift cannot import it.
let SQLITE_TRANSIENT = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

extension SQLiteDatabase.Value {
    public var int: Int64 { if case .int(let x) = self { return x }; return 0 }
    public var text: String { if case .text(let s) = self { return s }; return "" }
    public var blob: [UInt8] { if case .blob(let b) = self { return b }; return [] }
    public var real: Double {
        switch self { case .real(let x): return x; case .int(let x): return Double(x); default: return 0 }
    }
    public var optionalReal: Double? { if case .null = self { return nil }; return real }
    public var optionalText: String? { if case .text(let s) = self { return s }; return nil }
}
