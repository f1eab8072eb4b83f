import Cluster
import Protocol
import Testing

// At-least-once command delivery: the agent's ledger and the coordinator's outstanding set.

private func command(_ id: UInt64, node: String = "n1") -> Command {
    var c = Command()
    c.commandID = id
    c.nodeID = node
    c.ping = Stratolab_V1_Ping()
    return c
}

@Suite("Command ledger")
struct CommandLedgerTests {
    @Test("a command is executed once and acknowledged with the result")
    func executesOnce() {
        var ledger = CommandLedger()
        var runs: [UInt64] = []
        let ack = ledger.handle(command(5)) { c in runs.append(c.commandID); return (true, "pinged") }
        #expect(runs == [5])
        #expect(ack.commandID == 5 && ack.nodeID == "n1" && ack.ok && ack.detail == "pinged" && !ack.duplicate)
        #expect(ledger.previousAck(for: 5) == ack)
        #expect(ledger.previousAck(for: 6) == nil)
    }

    @Test("a re-delivered command is not run again and gets the first acknowledgement, marked duplicate")
    func duplicateRedelivery() {
        var ledger = CommandLedger()
        var runs = 0
        let first = ledger.handle(command(9)) { _ in runs += 1; return (false, "refused: draining") }
        for _ in 0..<3 {
            let again = ledger.handle(command(9)) { _ in runs += 1; return (true, "second run") }
            #expect(again.duplicate)
            #expect(again.commandID == first.commandID && again.ok == first.ok && again.detail == first.detail)
        }
        #expect(runs == 1)
        #expect(ledger.previousAck(for: 9)?.duplicate == false)
    }

    @Test("beyond its capacity the ledger forgets the oldest ids, which would then run again")
    func capacityEviction() {
        var ledger = CommandLedger(capacity: 3)
        var runs = 0
        for id in UInt64(1)...4 { _ = ledger.handle(command(id)) { _ in runs += 1; return (true, "") } }
        #expect(runs == 4)
        #expect(ledger.previousAck(for: 1) == nil)
        #expect((2...4).allSatisfy { ledger.previousAck(for: UInt64($0)) != nil })
        #expect(ledger.handle(command(4)) { _ in runs += 1; return (true, "") }.duplicate)
        #expect(runs == 4)
        #expect(!ledger.handle(command(1)) { _ in runs += 1; return (true, "") }.duplicate)
        #expect(runs == 5)
    }
}

@Suite("Outstanding commands")
struct OutstandingCommandsTests {
    @Test("a new command is due at once and then re-sent with doubling backoff up to the cap")
    func backoff() {
        var o = OutstandingCommands(retryNanos: .millis(100), maxRetryNanos: .millis(350))
        o.add(command(1), now: 0)
        #expect(o.count == 1)
        var sendTimes: [Int64] = []
        for ms in stride(from: Int64(0), through: 1500, by: 10) {
            if !o.due(now: .millis(ms), deliverable: { _ in true }).isEmpty { sendTimes.append(ms) }
        }
        // Waits of 100, 200, then capped at 350 ms.
        #expect(sendTimes == [0, 100, 300, 650, 1000, 1350])
        #expect(o.entries[1]?.attempts == 6)
        #expect(o.entries[1]?.createdAt == 0)
    }

    @Test("due commands come back in command id order")
    func idOrder() {
        var o = OutstandingCommands()
        for id in [UInt64(30), 10, 20] { o.add(command(id), now: 0) }
        #expect(o.due(now: 0) { _ in true }.map(\.commandID) == [10, 20, 30])
    }

    @Test("commands for unreachable nodes wait, without using up attempts, until the node is reachable")
    func unreachableWaits() {
        var o = OutstandingCommands(retryNanos: .millis(100), maxRetryNanos: .millis(1000))
        o.add(command(1, node: "down"), now: 0)
        o.add(command(2, node: "up"), now: 0)
        let reachable: (String) -> Bool = { $0 == "up" }
        #expect(o.due(now: 0, deliverable: reachable).map(\.commandID) == [2])
        #expect(o.due(now: .millis(5000), deliverable: reachable).map(\.commandID) == [2])
        #expect(o.entries[1]?.attempts == 0)
        #expect(o.due(now: .millis(5001)) { _ in true }.map(\.commandID) == [1])
    }

    @Test("an ack is matched by node and command id: the node's own settles it, another node's (forged or blind) settles nothing")
    func acknowledge() {
        var o = OutstandingCommands()
        o.add(command(1, node: "n1"), now: 0)
        o.add(command(2, node: "n1"), now: 0)
        #expect(o.acknowledge(1, by: "nobody") == .otherNode("n1"))
        #expect(o.acknowledge(1, by: "n2") == .otherNode("n1"))
        #expect(o.count == 2)
        guard case .settled(let e) = o.acknowledge(1, by: "n1") else { Issue.record("not settled"); return }
        #expect(e.command.commandID == 1)
        #expect(o.acknowledge(1, by: "n1") == .unknown)
        #expect(o.acknowledge(99, by: "n1") == .unknown)
        #expect(o.count == 1)
        #expect(o.due(now: 0) { _ in true }.map(\.commandID) == [2])
    }

    @Test("expediting a node makes only its commands due now")
    func expedite() {
        var o = OutstandingCommands(retryNanos: .millis(1000), maxRetryNanos: .millis(8000))
        o.add(command(1, node: "a"), now: 0)
        o.add(command(2, node: "b"), now: 0)
        #expect(o.due(now: 0) { _ in true }.count == 2)
        #expect(o.due(now: .millis(10)) { _ in true }.isEmpty)
        o.expedite(nodeID: "a", now: .millis(10))
        #expect(o.due(now: .millis(10)) { _ in true }.map(\.commandID) == [1])
    }

    @Test("a command restored with earlier attempts resumes its backoff where it left off")
    func restoredAttempts() {
        var o = OutstandingCommands(retryNanos: .millis(100), maxRetryNanos: .millis(10_000))
        o.add(command(1), now: 0, attempts: 3)
        #expect(o.due(now: 0) { _ in true }.count == 1)
        #expect(o.entries[1]?.nextSendAt == .millis(800))
        #expect(o.entries[1]?.attempts == 4)
    }
}
