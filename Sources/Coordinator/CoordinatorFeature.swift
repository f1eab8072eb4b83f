import Cluster
import Foundation
import Logging
import Protocol
import SwiftProtobuf

/// What the coordinator shell offers a feature's controller, within one loop turn: the store
/// (everything written joins the turn's transaction, committed before any reply or command of the
/// turn goes out), at-least-once commands to nodes, events, counters and the clock.
///
/// **Ownership:** the coordinator's loop thread, during the controller's calls only.
public protocol CoordinatorServices: AnyObject {
    var store: StateStore { get }
    var clock: Clock { get }
    var logger: Logger { get }
    var membership: Membership { get }
    var timeScale: Double { get }
    /// Data directory to seed knowledge from (nil: none).
    var dataDirectory: String? { get }
    /// Persists a command with a fresh id and delivers it at least once (re-sent until acknowledged).
    @discardableResult func enqueue(_ command: Command) throws -> Command
    /// Delivers a command at least once without writing it to the command table (the feature's own
    /// rows hold what it carries, and a restart sends it again from them).
    func enqueueTransient(_ command: Command) throws
    /// Drops queued commands that are no longer wanted.
    func cancelCommands(where shouldCancel: (Command) -> Bool)
    /// Commands still waiting for their acknowledgement.
    var pendingCommands: [Command] { get }
    func event(_ nodeID: String, _ kind: String, _ detail: String)
    func count(_ name: String)
    func counter(_ name: String) -> UInt64
    /// Logs the first few of a kind of problem, then every 1000th.
    func logLimited(_ kind: String, _ message: String)
}

/// A feature's coordinator side: decisions on top of membership. The shell calls it; it never
/// touches the socket. Adding a feature = one controller registered in the composition root
/// (`strato coordinator`); the shell has no case for it.
///
/// Every method is called on the loop thread inside the turn's transaction.
public protocol CoordinatorFeature: AnyObject {
    /// Wire names of the features whose reports and commands this controller owns.
    var features: [String] { get }
    /// Envelope bodies (`Envelope.bodyName`) this controller answers: its operator API.
    var requestBodies: [String] { get }
    /// This feature's tables (`CREATE TABLE IF NOT EXISTS …`), created when the store opens.
    var storeSchema: [String] { get }
    /// The coordinator starts on its store (restored nodes as they were).
    func start(_ s: CoordinatorServices, restoredNodes: [NodeRecord]) throws
    /// What a request of `requestBodies` needs of its sender's key (checked before `handleRequest`):
    /// reads `.anyRole`, submissions `.submit`, other changes `.operator` (the default).
    func access(_ envelope: Envelope) -> AccessNeed
    /// Answers a request of `requestBodies`; nil sends no reply (the client asks again).
    func handleRequest(_ envelope: Envelope, _ s: CoordinatorServices) -> Envelope.OneOf_Body?
    /// A node registered (`newLife`: a new process or a rejoin after being declared dead).
    func nodeRegistered(_ r: Register, newLife: Bool, _ s: CoordinatorServices)
    func nodeDead(_ nodeID: String, _ s: CoordinatorServices)
    /// This controller's reports from one heartbeat; returns the keys made durable (settled in the ack).
    func reports(_ reports: [FeatureReport], feature: String, from nodeID: String, clockOffsetNanos: Int64, _ s: CoordinatorServices) -> [String]
    /// A node acknowledged one of this controller's commands.
    func acknowledged(_ command: Command, _ feature: FeatureCommand, ack: CommandAck, _ s: CoordinatorServices)
    /// Once per loop turn: decide and enqueue. True when new commands should go out now.
    func turn(_ s: CoordinatorServices) -> Bool
    /// Periodic writes of progress (every 250 ms).
    func flush(_ s: CoordinatorServices) throws
    /// When the controller next has something due (wall clock), so the loop wakes in time.
    func nextDueWall() -> Int64?
    /// Counters for the trace, once a second.
    func traceCounters() -> [String: [String: Double]]
}

extension CoordinatorFeature {
    public var requestBodies: [String] { [] }
    public var storeSchema: [String] { [] }
    public func start(_ s: CoordinatorServices, restoredNodes: [NodeRecord]) throws {}
    public func access(_ envelope: Envelope) -> AccessNeed { .operator }
    public func handleRequest(_ envelope: Envelope, _ s: CoordinatorServices) -> Envelope.OneOf_Body? { nil }
    public func nodeRegistered(_ r: Register, newLife: Bool, _ s: CoordinatorServices) {}
    public func nodeDead(_ nodeID: String, _ s: CoordinatorServices) {}
    public func reports(_ reports: [FeatureReport], feature: String, from nodeID: String, clockOffsetNanos: Int64, _ s: CoordinatorServices) -> [String] { [] }
    public func acknowledged(_ command: Command, _ feature: FeatureCommand, ack: CommandAck, _ s: CoordinatorServices) {}
    public func turn(_ s: CoordinatorServices) -> Bool { false }
    public func flush(_ s: CoordinatorServices) throws {}
    public func nextDueWall() -> Int64? { nil }
    public func traceCounters() -> [String: [String: Double]] { [:] }
}

extension Command {
    /// A command carrying a feature's own command message.
    public static func feature(_ name: String, node: String, _ body: some SwiftProtobuf.Message) -> Command {
        var f = FeatureCommand()
        f.feature = name
        f.body = (try? body.serializedData()) ?? Data()
        var c = Command()
        c.nodeID = node
        c.feature = f
        return c
    }
}
