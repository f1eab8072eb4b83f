import Protocol

/// Timeouts of the failure detector.
public struct FailureDetectorConfig: Sendable, Equatable {
    /// Silence after which a node is suspected.
    public var suspectAfterNanos: Int64
    /// Silence after which a node is declared dead. Must exceed `suspectAfterNanos`.
    public var deadAfterNanos: Int64

    public init(suspectAfterNanos: Int64 = .millis(1000), deadAfterNanos: Int64 = .millis(2000)) {
        self.suspectAfterNanos = suspectAfterNanos
        self.deadAfterNanos = deadAfterNanos
    }

    public static let `default` = FailureDetectorConfig()
}

/// A node's liveness as the failure detector sees it.
public enum Liveness: String, Sendable, Equatable {
    case alive, suspect, dead

    public var nodeState: NodeState {
        switch self {
        case .alive: return .alive
        case .suspect: return .suspect
        case .dead: return .dead
        }
    }
}

/// A change of liveness, reported so the shell can log, persist and react.
public struct LivenessTransition: Sendable, Equatable {
    public let nodeID: String
    public let from: Liveness
    public let to: Liveness
    /// Silence at the time of the transition.
    public let silenceNanos: Int64
}

/// Timeout-based failure detector: alive → suspect → dead on silence; a suspect that is heard
/// again is alive. A dead node stays dead until it is tracked again (re-registration), because a
/// node declared dead may have had its work moved elsewhere and must rejoin with a new incarnation.
///
/// Pure: it never reads a clock; callers pass monotonic time.
public struct FailureDetector: Sendable {
    public var config: FailureDetectorConfig
    private var lastHeard: [String: Int64] = [:]
    private var state: [String: Liveness] = [:]

    public init(config: FailureDetectorConfig = .default) {
        precondition(config.deadAfterNanos > config.suspectAfterNanos, "dead timeout must exceed suspect timeout")
        self.config = config
    }

    /// Starts (or restarts) watching a node as alive, last heard at `now`.
    public mutating func track(_ nodeID: String, now: Int64) {
        lastHeard[nodeID] = now
        state[nodeID] = .alive
    }

    public mutating func forget(_ nodeID: String) {
        lastHeard[nodeID] = nil
        state[nodeID] = nil
    }

    public func liveness(of nodeID: String) -> Liveness? { state[nodeID] }

    public func lastHeard(_ nodeID: String) -> Int64? { lastHeard[nodeID] }

    public var trackedCount: Int { state.count }

    /// Records that the node was heard at `now`. Returns the transition if a suspect came back,
    /// nil otherwise. A dead or untracked node is not revived: the caller must make it re-register.
    @discardableResult
    public mutating func heard(_ nodeID: String, now: Int64) -> LivenessTransition? {
        guard let current = state[nodeID], current != .dead else { return nil }
        let silence = now - (lastHeard[nodeID] ?? now)
        lastHeard[nodeID] = max(now, lastHeard[nodeID] ?? now)
        if current == .suspect {
            state[nodeID] = .alive
            return LivenessTransition(nodeID: nodeID, from: .suspect, to: .alive, silenceNanos: silence)
        }
        return nil
    }

    /// Advances time: returns every node whose liveness changed because of silence.
    public mutating func tick(now: Int64) -> [LivenessTransition] {
        var transitions: [LivenessTransition] = []
        for (nodeID, current) in state where current != .dead {
            let silence = now - (lastHeard[nodeID] ?? now)
            let next: Liveness
            if silence >= config.deadAfterNanos {
                next = .dead
            } else if silence >= config.suspectAfterNanos {
                next = .suspect
            } else {
                next = .alive
            }
            if next != current && next != .alive {
                state[nodeID] = next
                transitions.append(LivenessTransition(nodeID: nodeID, from: current, to: next, silenceNanos: silence))
            }
        }
        return transitions.sorted { $0.nodeID < $1.nodeID }
    }
}
