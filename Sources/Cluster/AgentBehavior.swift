import Foundation
import Protocol
import SwiftProtobuf
import Wire

/// What makes a GPU, memory or render node different: its resources and telemetry, and the
/// features it offers (`handlers`). The shared `AgentSession` does the rest (registration,
/// heartbeats, reconnection, command de-duplication, clock estimation, routing each feature's
/// commands and reports to its handler). A node may offer several features.
///
/// Methods are called on the session's thread only.
public protocol AgentBehavior: AnyObject {
    var kind: NodeKind { get }
    /// Resources to register with.
    func capabilities() -> Capabilities
    /// Adds kind-specific telemetry (GPU utilisation, tier use, render slots) to `telemetry`.
    func fillTelemetry(_ telemetry: inout Telemetry)
    /// Ids of the work this node runs now that is not a feature's (reported on registration).
    func running() -> [String]
    /// The features this node offers, each executing its own commands and reporting its own facts.
    var handlers: [FeatureHandler] { get }
    /// The agent is stopping cleanly.
    func shutdown()
}

extension AgentBehavior {
    public func running() -> [String] { [] }
    public var handlers: [FeatureHandler] { [] }
    public func shutdown() {}
}

/// The answer a handler gives to a command.
public struct FeatureOutcome: Sendable {
    public var ok: Bool
    public var detail: String
    /// The feature's typed result (its own message, serialized), when it has one.
    public var result: [UInt8]?
    public init(ok: Bool, detail: String, result: [UInt8]? = nil) { self.ok = ok; self.detail = detail; self.result = result }
    public static func refused(_ why: String) -> FeatureOutcome { FeatureOutcome(ok: false, detail: why) }
}

/// A feature's agent side on one node: executes the feature's commands (`Command.feature` with
/// this `feature` name) and reports through the heartbeat as `FeatureReport`s, repeating each
/// report key until the coordinator settles it. Adding a feature to agents means writing one of
/// these and listing it in a node's `handlers`: the session needs no change.
///
/// Called on the session's thread only.
public protocol FeatureHandler: AnyObject {
    /// The feature's name on the wire ("jobs", "inference", ...).
    var feature: String { get }
    /// Executes one command body (the feature's own command message, serialized).
    func execute(_ body: [UInt8], commandID: UInt64, wallNanos: Int64) -> FeatureOutcome
    /// Reports for the next heartbeat: progress, and facts repeated until settled.
    func reports(wallNanos: Int64) -> [FeatureReport]
    /// The coordinator made the reports with these keys durable: stop repeating them.
    func settle(_ keys: [String])
    /// When something is due to change (a job finishing, a request's last token), on the agent's
    /// wall clock: the session heartbeats then rather than at the next interval.
    func nextReportDue(wallNanos: Int64) -> Int64?
    /// Ids of what this feature runs on the node (registration and heartbeats list them).
    func running() -> [String]
    /// Sockets this handler owns (a data-plane peer socket, a stream) that the session polls with
    /// its own; `pump` is called on every loop turn.
    var sockets: [ZMQSocket] { get }
    /// Whether the session pumps this handler every loop turn (default: when it owns sockets; a
    /// handler with timed work of its own says true).
    var isPumped: Bool { get }
    func pump(wallNanos: Int64)
    /// When `pump` next has timed work (monotonic nanoseconds), so the session wakes for it.
    var nextPumpDue: Int64? { get }
    /// The agent is stopping: stop what runs outside this process.
    func shutdown()
    /// The session hands the handler its node's context (clock, tracer, logger) before it runs:
    /// handlers and their backends record into that tracer, not a process-wide one.
    func attach(_ context: NodeContext)
}

extension FeatureHandler {
    public func settle(_ keys: [String]) {}
    public func nextReportDue(wallNanos: Int64) -> Int64? { nil }
    public func running() -> [String] { [] }
    public var sockets: [ZMQSocket] { [] }
    public var isPumped: Bool { !sockets.isEmpty }
    public func pump(wallNanos: Int64) {}
    public var nextPumpDue: Int64? { nil }
    public func shutdown() {}
    public func attach(_ context: NodeContext) {}

    /// A report of this feature.
    public func report(key: String, _ body: some SwiftProtobuf.Message) -> FeatureReport {
        var r = FeatureReport()
        r.feature = feature
        r.key = key
        r.body = (try? body.serializedData()) ?? Data()
        return r
    }
}

/// A handler that owns the node's data-plane peer socket: the session advertises it at
/// registration (`Register.data_endpoint`), so the coordinator can tell peers where to send.
public protocol AdvertisesDataEndpoint {
    var dataEndpoint: String { get }
    var dataPublicKey: String? { get }
}

/// Who a node is: its id, site and labels.
public struct AgentIdentity: Sendable {
    public var nodeID: String
    public var site: Site
    public var labels: [String: String]

    public init(nodeID: String, site: Site, labels: [String: String] = [:]) {
        self.nodeID = nodeID
        self.site = site
        self.labels = labels
    }

    public init(nodeID: String, siteName: String, siteKind: SiteKind, labels: [String: String] = [:]) {
        var site = Site()
        site.name = siteName
        site.kind = siteKind
        self.init(nodeID: nodeID, site: site, labels: labels)
    }
}
