import Cluster
import Foundation
import Protocol
import Scheduling
import Testing
@testable import Coordinator

// The coordinator's SQLite state, reopened on the same directory as a restarted coordinator would.

/// A fresh state directory, removed when the test ends.
private final class TempDirectory {
    let path: String
    init() {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("strato-state-\(UUID().uuidString)").path
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

private func record(_ id: String, state: NodeState, incarnation: UInt64, wall: Int64) -> NodeRecord {
    var s = NodeStatus()
    s.nodeID = id
    s.kind = .gpu
    s.state = state
    s.incarnation = incarnation
    s.labels = ["rack": "r-\(id)"]
    s.capabilities.gpu = GPUCatalog.capabilities(for: GPUCatalog.model(named: "H100")!, count: 8)
    s.host = "host-\(id)"
    s.pid = 1234
    s.registeredAtUnixNanos = wall - 1
    s.running = ["job-1"]
    return NodeRecord(status: s, instanceID: "inst-\(id)", lastHeardMono: 77, lastHeardWall: wall, confirmed: true)
}

private func command(_ id: UInt64, node: String) -> Command {
    var c = Command()
    c.commandID = id
    c.nodeID = node
    c.setLabels.labels = ["k": "v\(id)"]
    return c
}

@Suite("State store")
struct StateStoreTests {
    @Test("saved nodes load back equal from a store reopened on the same directory")
    func nodesSurviveReopen() throws {
        let dir = TempDirectory()
        let records = [record("b", state: .dead, incarnation: 2, wall: 200), record("a", state: .alive, incarnation: 5, wall: 100)]
        do {
            let store = try StateStore(directory: dir.path)
            try store.save(records)
            try store.save([])   // saving nothing is a no-op
        }
        let loaded = try StateStore(directory: dir.path).loadNodes()
        #expect(loaded.map(\.id) == ["a", "b"])
        for r in loaded {
            let original = records.first { $0.id == r.id }!
            #expect(r.status == original.status)
            #expect(r.instanceID == original.instanceID)
            #expect(r.lastHeardWall == original.lastHeardWall)
            // Volatile bookkeeping does not survive a restart.
            #expect(r.lastHeardMono == nil)
            #expect(r.confirmed == false)
        }
    }

    @Test("saving a node again replaces its row")
    func nodeUpsert() throws {
        let dir = TempDirectory()
        let store = try StateStore(directory: dir.path)
        try store.save([record("a", state: .alive, incarnation: 1, wall: 10)])
        try store.save([record("a", state: .suspect, incarnation: 2, wall: 20)])
        let loaded = try store.loadNodes()
        #expect(loaded.count == 1)
        #expect(loaded.first?.status.incarnation == 2 && loaded.first?.status.state == .suspect && loaded.first?.lastHeardWall == 20)
    }

    @Test("the epoch increments on every start, across reopening")
    func epochIncrements() throws {
        let dir = TempDirectory()
        #expect(try StateStore(directory: dir.path).nextEpoch() == 1)
        #expect(try StateStore(directory: dir.path).nextEpoch() == 2)
        let store = try StateStore(directory: dir.path)
        #expect(try store.nextEpoch() == 3)
        #expect(try store.nextEpoch() == 4)
    }

    @Test("command ids keep increasing across reopening")
    func commandIDsMonotonic() throws {
        let dir = TempDirectory()
        var ids: [UInt64] = []
        for _ in 0..<3 {
            let store = try StateStore(directory: dir.path)
            ids.append(try store.nextCommandID())
            ids.append(try store.nextCommandID())
        }
        #expect(ids == [1, 2, 3, 4, 5, 6])
    }

    @Test("pending commands survive reopening, and acknowledged ones are no longer pending")
    func pendingCommands() throws {
        let dir = TempDirectory()
        do {
            let store = try StateStore(directory: dir.path)
            try store.savePending(command(2, node: "b"), attempts: 0, at: 10)
            try store.savePending(command(1, node: "a"), attempts: 1, at: 11)
            try store.savePending(command(1, node: "a"), attempts: 3, at: 12)   // re-sent: attempts updated
        }
        let store = try StateStore(directory: dir.path)
        let pending = try store.loadPendingCommands()
        #expect(pending.map(\.command) == [command(1, node: "a"), command(2, node: "b")])
        #expect(pending.map(\.attempts) == [3, 0])

        var ack = CommandAck(); ack.commandID = 1; ack.nodeID = "a"; ack.ok = false; ack.detail = "no such label"
        try store.markAcknowledged(ack, at: 20)
        #expect(try store.loadPendingCommands().map(\.command.commandID) == [2])
        // A second acknowledgement does not overwrite the first.
        var again = ack; again.ok = true; again.detail = "late"
        try store.markAcknowledged(again, at: 30)
        let acked = try StateStore(directory: dir.path).acknowledgedCommands()
        #expect(acked.count == 1)
        #expect(acked.first.map { [String($0.0), $0.1, String($0.2), $0.3] } == ["1", "a", "false", "no such label"])
    }

    @Test("counters and events persist across reopening")
    func countersAndEvents() throws {
        let dir = TempDirectory()
        do {
            let store = try StateStore(directory: dir.path)
            try store.saveCounters(["rejected_malformed": 3, "rejected_frame_too_large": 1])
            try store.saveCounters(["rejected_malformed": 5])
            try store.append([
                .init(at: 1, nodeID: "a", kind: "registered", detail: "incarnation 1"),
                .init(at: 2, nodeID: "b", kind: "registered", detail: "incarnation 1"),
                .init(at: 3, nodeID: "a", kind: "dead", detail: "silent 2 s"),
            ])
            try store.append([])
        }
        let store = try StateStore(directory: dir.path)
        #expect(try store.loadCounters() == ["rejected_malformed": 5, "rejected_frame_too_large": 1])
        let all = try store.events()
        #expect(all.map(\.at) == [1, 2, 3])
        let a = try store.events(nodeID: "a")
        #expect(a.map(\.kind) == ["registered", "dead"])
        #expect(a.last?.detail == "silent 2 s")
        #expect(try store.events(nodeID: "nobody").isEmpty)
    }

    @Test("a batch that fails leaves nothing behind")
    func batchRollsBack() throws {
        struct Boom: Error {}
        let dir = TempDirectory()
        let store = try StateStore(directory: dir.path)
        #expect(throws: Boom.self) {
            try store.batch {
                try store.saveCounters(["c": 1])
                throw Boom()
            }
        }
        #expect(try store.loadCounters().isEmpty)
        try store.batch { try store.saveCounters(["c": 2]) }
        #expect(try store.loadCounters() == ["c": 2])
    }

    @Test("a state directory of another schema version is refused")
    func schemaVersionChecked() throws {
        let dir = TempDirectory()
        do {
            let store = try StateStore(directory: dir.path)
            try store.setMeta("schema_version", StateStore.schemaVersion + 1)
        }
        #expect(throws: SQLiteError.self) { try StateStore(directory: dir.path) }
    }
}
