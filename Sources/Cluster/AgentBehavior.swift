import Protocol

/// What makes a GPU, memory or render agent different; the shared `AgentSession` does the rest
/// (registration, heartbeats, reconnection, command de-duplication, clock estimation).
///
/// Methods are called on the session's thread only.
public protocol AgentBehavior: AnyObject {
    var kind: NodeKind { get }
    /// Resources to register with.
    func capabilities() -> Capabilities
    /// Adds kind-specific telemetry (GPU utilisation, tier use, render slots) to `telemetry`.
    func fillTelemetry(_ telemetry: inout Telemetry)
    /// Ids of the work this node runs now (reported on registration so the coordinator can reconcile).
    func running() -> [String]
    /// Executes a kind-specific command; nil if this agent does not know the action.
    func execute(_ command: Command) -> (ok: Bool, detail: String)?
    /// Progress of the work this node runs, for the next heartbeat (`wallNanos` = agent clock).
    func jobReports(wallNanos: Int64) -> [JobReport]
    /// The coordinator made these terminal reports durable: stop repeating them.
    func settle(_ jobIDs: [String])
    /// Inference requests this node's replicas completed, for the next heartbeat; repeated until settled.
    func requestResults(wallNanos: Int64) -> [RequestResult]
    /// The coordinator made these request results durable.
    func settleRequests(_ requestIDs: [String])
    /// When something this node runs is due to change state (a job finishing, or done loading),
    /// on the agent's wall clock: the session heartbeats then rather than at the next interval, so
    /// the coordinator frees the GPUs without waiting up to a heartbeat. Nil: nothing due.
    func nextReportDue(wallNanos: Int64) -> Int64?
    /// The agent is stopping cleanly: stop what runs outside this process (job processes).
    func shutdown()
}

extension AgentBehavior {
    public func jobReports(wallNanos: Int64) -> [JobReport] { [] }
    public func settle(_ jobIDs: [String]) {}
    public func requestResults(wallNanos: Int64) -> [RequestResult] { [] }
    public func settleRequests(_ requestIDs: [String]) {}
    public func nextReportDue(wallNanos: Int64) -> Int64? { nil }
    public func shutdown() {}
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
