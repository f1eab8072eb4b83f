import Foundation
import Protocol

/// The agent side of at-least-once command delivery: executes each command id once and answers a
/// re-delivered command with the acknowledgement it gave the first time (marked `duplicate`).
/// Remembers the last `capacity` ids, far more than can be in flight.
public struct CommandLedger: Sendable {
    public let capacity: Int
    private var acks: [UInt64: CommandAck] = [:]
    private var order: [UInt64] = []

    public init(capacity: Int = 4096) { self.capacity = capacity }

    public func previousAck(for commandID: UInt64) -> CommandAck? { acks[commandID] }

    /// Runs `execute` unless the command was seen, and returns the acknowledgement to send.
    public mutating func handle(_ command: Command, execute: (Command) -> (ok: Bool, detail: String)) -> CommandAck {
        handle(command, run: { c in let r = execute(c); return FeatureOutcome(ok: r.ok, detail: r.detail) })
    }

    /// The same, for an action with a typed result (a feature's command): the result travels in
    /// the acknowledgement, and a repeat gets the same one.
    public mutating func handle(_ command: Command, run: (Command) -> FeatureOutcome) -> CommandAck {
        if var previous = acks[command.commandID] {
            previous.duplicate = true
            return previous
        }
        let result = run(command)
        var ack = CommandAck()
        ack.commandID = command.commandID
        ack.nodeID = command.nodeID
        ack.ok = result.ok
        ack.detail = result.detail
        if let bytes = result.result, case .feature(let f)? = command.action {
            var r = FeatureResult(); r.feature = f.feature; r.body = Data(bytes)
            ack.result = r
        }
        acks[command.commandID] = ack
        order.append(command.commandID)
        if order.count > capacity {
            let evicted = order.removeFirst()
            acks[evicted] = nil
        }
        return ack
    }
}

/// The coordinator side: commands sent but not yet acknowledged, and when to send them again.
/// Pure: the shell persists entries and sends what `due` returns.
public struct OutstandingCommands: Sendable {
    public struct Entry: Sendable, Equatable {
        public var command: Command
        public var attempts: Int
        public var nextSendAt: Int64
        public let createdAt: Int64
    }

    /// First re-send after this long; doubles per attempt up to `maxRetryNanos`.
    public var retryNanos: Int64
    public var maxRetryNanos: Int64
    private(set) public var entries: [UInt64: Entry] = [:]

    public init(retryNanos: Int64 = .millis(500), maxRetryNanos: Int64 = .millis(4000)) {
        self.retryNanos = retryNanos
        self.maxRetryNanos = maxRetryNanos
    }

    public var count: Int { entries.count }

    /// Adds a command to send now.
    public mutating func add(_ command: Command, now: Int64, attempts: Int = 0) {
        entries[command.commandID] = Entry(command: command, attempts: attempts, nextSendAt: now, createdAt: now)
    }

    /// What an acknowledgement did.
    public enum AckOutcome: Equatable, Sendable {
        case settled(Entry)
        /// No such command outstanding (a duplicate ack, or an id never sent).
        case unknown
        /// The command is outstanding for another node: not settled (an ack is matched by node and id).
        case otherNode(String)
    }

    /// Removes a command acknowledged by `nodeID`; an ack naming another node settles nothing.
    @discardableResult
    public mutating func acknowledge(_ commandID: UInt64, by nodeID: String) -> AckOutcome {
        guard let e = entries[commandID] else { return .unknown }
        guard e.command.nodeID == nodeID else { return .otherNode(e.command.nodeID) }
        entries[commandID] = nil
        return .settled(e)
    }

    /// Commands due for (re-)sending to nodes for which `deliverable` is true, in id order; each
    /// is rescheduled with exponential backoff. Commands for unreachable nodes wait.
    public mutating func due(now: Int64, deliverable: (String) -> Bool) -> [Command] {
        var out: [Command] = []
        for id in entries.keys.sorted() {
            guard var e = entries[id], e.nextSendAt <= now, deliverable(e.command.nodeID) else { continue }
            let backoff = min(maxRetryNanos, retryNanos << Int64(min(e.attempts, 8)))
            e.attempts += 1
            e.nextSendAt = now + backoff
            entries[id] = e
            out.append(e.command)
        }
        return out
    }

    /// Drops outstanding commands that no longer matter (e.g. requests for a replica that is gone,
    /// which go elsewhere); returns them.
    @discardableResult
    public mutating func cancel(where matches: (Command) -> Bool) -> [Command] {
        let ids = entries.filter { matches($0.value.command) }.map(\.key)
        return ids.sorted().compactMap { entries.removeValue(forKey: $0)?.command }
    }

    /// Makes every command for `nodeID` due now (e.g. the node just re-registered).
    public mutating func expedite(nodeID: String, now: Int64) {
        for (id, e) in entries where e.command.nodeID == nodeID {
            entries[id]?.nextSendAt = now
        }
    }
}
