import Protocol
import Wire

/// What the coordinator knows of one node. `status` is the operator-facing record (and what the
/// state store persists); the other fields are volatile bookkeeping.
public struct NodeRecord: Sendable {
    /// The node's status without its telemetry, which is kept apart as received and decoded only
    /// when `status` is read (status replies, the periodic flush): not on each of thousands of
    /// heartbeats a second. What every other reader (features, liveness) reads.
    public private(set) var info: NodeStatus
    private var telemetry: TelemetryBytes?

    /// The whole status, telemetry decoded.
    public var status: NodeStatus {
        get {
            guard let t = telemetry else { return info }
            var s = info
            s.telemetry = t.decoded()
            return s
        }
        _modify {
            yield &info
            keepTelemetryApart()
        }
    }

    public var instanceID: String
    /// Monotonic time last heard, since this coordinator started; nil if not heard yet.
    public var lastHeardMono: Int64?
    /// Wall time last heard (persisted, so age survives a coordinator restart).
    public var lastHeardWall: Int64
    /// True once heard by this coordinator process (restored records start unconfirmed).
    public var confirmed: Bool

    public var id: String { info.nodeID }

    public init(status: NodeStatus, instanceID: String, lastHeardMono: Int64?, lastHeardWall: Int64, confirmed: Bool) {
        self.info = status
        self.instanceID = instanceID
        self.lastHeardMono = lastHeardMono
        self.lastHeardWall = lastHeardWall
        self.confirmed = confirmed
        keepTelemetryApart()
    }

    private mutating func keepTelemetryApart() {
        guard info.hasTelemetry else { return }
        telemetry = TelemetryBytes(info.telemetry)
        info.clearTelemetry()
    }

    /// A heartbeat of the current incarnation arrived; `telemetry`, when given, is its telemetry
    /// as received (`hb` then carries none).
    mutating func heard(_ hb: Heartbeat, telemetry: TelemetryBytes? = nil, now: Int64, wallNow: Int64) {
        lastHeardMono = now
        lastHeardWall = wallNow
        confirmed = true
        info.state = .alive
        self.telemetry = telemetry ?? (hb.hasTelemetry ? TelemetryBytes(hb.telemetry) : nil)
        if hb.hasClock { info.clock = hb.clock }
        info.running = hb.running
    }
}

/// Membership of the cluster: registrations, heartbeats and liveness. A pure state machine: the
/// coordinator shell feeds it events with timestamps and carries out what it returns.
public struct Membership: Sendable {
    public enum RegisterOutcome: Equatable, Sendable {
        /// Accepted. `newLife` is true when the incarnation changed (new process or rejoin after
        /// being declared dead); false for a same-process re-registration (reconciliation).
        case accepted(incarnation: UInt64, newLife: Bool)
        case rejected(ErrorCode, String)
    }

    public enum HeartbeatOutcome: Equatable, Sendable {
        case ok(revived: Bool)
        case mustRegister(String)
    }

    public private(set) var nodes: [String: NodeRecord] = [:]
    public private(set) var detector: FailureDetector

    public init(config: FailureDetectorConfig = .default) {
        detector = FailureDetector(config: config)
    }

    /// Restores records loaded from the state store after a coordinator restart. Nodes that were
    /// alive or suspect are watched again from `now`: they are alive if they keep heartbeating and
    /// go suspect, then dead, like any silent node if they died while the coordinator was down.
    public mutating func restore(_ records: [NodeRecord], now: Int64) {
        for var r in records {
            r.confirmed = false
            r.lastHeardMono = nil
            if r.info.state == .alive || r.info.state == .suspect {
                detector.track(r.id, now: now)
                r.status.state = .alive
            }
            nodes[r.id] = r
        }
    }

    public mutating func register(_ reg: Register, instanceID: String, now: Int64, wallNow: Int64) -> RegisterOutcome {
        let problems = RegistrationValidator.problems(in: reg)
        if !problems.isEmpty {
            return .rejected(.invalidRegistration, "registration of '\(reg.nodeID)' rejected: " + problems.joined(separator: "; "))
        }
        let incarnation: UInt64
        let newLife: Bool
        if let existing = nodes[reg.nodeID] {
            let live = existing.info.state == .alive || existing.info.state == .suspect
            let sameProcess = existing.instanceID == instanceID
            if live && !sameProcess && existing.confirmed {
                return .rejected(.nodeIDConflict,
                    "node id '\(reg.nodeID)' is held by a live node (pid \(existing.info.pid) on \(existing.info.host), incarnation \(existing.info.incarnation)); a second node cannot claim it until that one is dead")
            }
            if live && sameProcess {
                incarnation = existing.info.incarnation
                newLife = false
            } else {
                incarnation = max(existing.info.incarnation, reg.lastIncarnation) + 1
                newLife = true
            }
        } else {
            incarnation = reg.lastIncarnation + 1
            newLife = true
        }
        var status = nodes[reg.nodeID]?.status ?? NodeStatus()
        status.nodeID = reg.nodeID
        status.kind = reg.kind
        status.site = reg.site
        status.state = .alive
        status.incarnation = incarnation
        status.labels = reg.labels
        status.capabilities = reg.capabilities
        status.running = reg.running
        status.host = reg.host
        status.dataEndpoint = reg.dataEndpoint
        status.dataPublicKey = reg.dataPublicKey
        status.pid = reg.pid
        if newLife { status.registeredAtUnixNanos = wallNow; status.drained = false }
        nodes[reg.nodeID] = NodeRecord(status: status, instanceID: instanceID, lastHeardMono: now,
                                       lastHeardWall: wallNow, confirmed: true)
        detector.track(reg.nodeID, now: now)
        return .accepted(incarnation: incarnation, newLife: newLife)
    }

    /// `telemetry`: the heartbeat's telemetry as received, when `hb` carries it that way (`HeartbeatFrame`).
    public mutating func heartbeat(_ hb: Heartbeat, telemetry: TelemetryBytes? = nil, now: Int64, wallNow: Int64) -> HeartbeatOutcome {
        // Read what the checks need, then update the record in place: copying a record out and
        // back would copy its protobuf storage on every heartbeat (thousands a second).
        guard let state = nodes[hb.nodeID]?.info.state, let incarnation = nodes[hb.nodeID]?.info.incarnation else {
            return .mustRegister("node '\(hb.nodeID)' is not registered")
        }
        switch state {
        case .dead: return .mustRegister("node '\(hb.nodeID)' was declared dead; register again")
        case .left: return .mustRegister("node '\(hb.nodeID)' left; register again")
        default: break
        }
        if hb.incarnation != incarnation {
            return .mustRegister("heartbeat for incarnation \(hb.incarnation) but '\(hb.nodeID)' is at incarnation \(incarnation)")
        }
        let transition = detector.heard(hb.nodeID, now: now)
        nodes[hb.nodeID]!.heard(hb, telemetry: telemetry, now: now, wallNow: wallNow)
        return .ok(revived: transition != nil)
    }

    /// A clean departure: the node is marked left and no longer watched.
    public mutating func deregister(_ d: Deregister) -> Bool {
        guard var record = nodes[d.nodeID], record.info.incarnation == d.incarnation else { return false }
        record.status.state = .left
        nodes[d.nodeID] = record
        detector.forget(d.nodeID)
        return true
    }

    /// Applies the failure detector's timeouts.
    public mutating func tick(now: Int64) -> [LivenessTransition] {
        let transitions = detector.tick(now: now)
        for t in transitions {
            nodes[t.nodeID]?.status.state = t.to.nodeState
        }
        return transitions
    }

    public mutating func setLabels(_ labels: [String: String], on nodeID: String) {
        guard nodes[nodeID] != nil else { return }
        for (k, v) in labels {
            if v.isEmpty { nodes[nodeID]!.status.labels[k] = nil } else { nodes[nodeID]!.status.labels[k] = v }
        }
    }

    public mutating func setDrained(_ drained: Bool, on nodeID: String) {
        nodes[nodeID]?.status.drained = drained
    }

    /// Whether a node can be sent commands now.
    public func isReachable(_ nodeID: String) -> Bool {
        guard let r = nodes[nodeID] else { return false }
        return r.info.state == .alive || r.info.state == .suspect
    }

    public func count(in state: NodeState) -> Int {
        nodes.values.filter { $0.info.state == state }.count
    }
}
