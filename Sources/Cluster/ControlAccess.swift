import Protocol
import Wire

/// Who sent a control message: the coordinator ROUTER's routing id of its connection, and the
/// CURVE public key the connection was admitted with (nil on an open coordinator).
public struct Peer: Hashable, Sendable {
    public var connection: [UInt8]
    public var key: String?
    public init(connection: [UInt8], key: String?) { self.connection = connection; self.key = key }
}

/// What a message needs of its sender's key.
public enum AccessNeed: String, Sendable {
    /// Every authorised key (status and other reads, trace batches).
    case anyRole = "any role"
    /// An agent key (registration, heartbeats, acks, deregistration).
    case agent
    /// A driver or operator key (submitting jobs and requests).
    case submit = "driver or operator"
    /// An operator key (every other change of state).
    case `operator`

    func allows(_ role: ClientRole) -> Bool {
        switch self {
        case .anyRole: return true
        case .agent: return role == .agent
        case .submit: return role == .driver || role == .operator
        case .operator: return role == .operator
        }
    }
}

/// Identity at the coordinator (pure): which keys are authorised with which role, and which
/// connection and key each registered node is bound to.
///
/// A node is bound by its registration to the connection and key that sent it; heartbeats, acks
/// and deregistration for it are accepted only from that pair. The binding moves only by a new
/// registration that membership accepts (the incarnation rules: a live node's id cannot be taken
/// by another process) from a key that may claim the id. After a coordinator restart nodes come
/// back unbound; the first heartbeat from a key that may claim the id binds it (the agent
/// re-registers on the new epoch right after).
///
/// **Ownership:** a value owned by the coordinator's loop thread.
public struct ControlAccess: Sendable {
    /// nil: the coordinator runs open (no CURVE): no roles, bindings by connection only.
    public private(set) var keys: [String: AuthorizedKey]?
    private var bound: [String: Peer] = [:]

    public init(keys: [String: AuthorizedKey]?) { self.keys = keys }

    /// A refusal, with the error code and message the sender gets.
    public enum Refusal: Error, Equatable, Sendable {
        case keyNotAuthorized
        case role(need: AccessNeed, have: ClientRole)
        case mayNotClaim(node: String)
        case notBound(node: String)
        case notRegistered(node: String)
        case senderMismatch(sender: String, node: String)
        case wrongRecipient(String)

        public var code: ErrorCode {
            switch self {
            case .keyNotAuthorized, .role, .mayNotClaim: return .notAuthorized
            case .notBound: return .notBound
            case .notRegistered: return .notRegistered
            case .senderMismatch, .wrongRecipient: return .senderMismatch
            }
        }

        /// The counter the coordinator bumps (one per kind, so a spoofing attempt is visible in status).
        public var counter: String {
            switch self {
            case .keyNotAuthorized: return "refused_key_not_authorized"
            case .role: return "refused_role"
            case .mayNotClaim: return "refused_node_not_pinned"
            case .notBound: return "refused_not_bound"
            case .notRegistered: return "refused_not_registered"
            case .senderMismatch, .wrongRecipient: return "refused_sender_mismatch"
            }
        }

        public var message: String {
            switch self {
            case .keyNotAuthorized: return "this connection's key is not in authorized_keys (removed since it connected?)"
            case let .role(need, have): return "a key with role '\(have.rawValue)' may not send this; it needs \(need.rawValue)"
            case .mayNotClaim(let n): return "this key may not register or speak for node '\(n)' (its authorized_keys line pins other node ids)"
            case .notBound(let n): return "node '\(n)' is bound to the connection and key that registered it; register again from this connection if you are that node"
            case .notRegistered(let n): return "node '\(n)' is not registered"
            case let .senderMismatch(sender, node): return "sender '\(sender)' does not match node '\(node)' the message speaks for"
            case .wrongRecipient(let r): return "recipient '\(r)' is not the coordinator"
            }
        }
    }

    public var isOpen: Bool { keys == nil }

    /// Replaces the authorised keys (a reload of authorized_keys). Bindings stay; a removed key's
    /// messages are refused by `admit` from now on, so its nodes fall silent and die.
    public mutating func reload(_ keys: [String: AuthorizedKey]) { self.keys = keys }

    /// The role of the key behind `peer`, when it is authorised (nil on an open coordinator).
    public func role(of peer: Peer) -> ClientRole? { peer.key.flatMap { keys?[$0]?.role } }

    /// Whether `peer` may send a message that needs `need`.
    public func admit(_ peer: Peer, need: AccessNeed) -> Refusal? {
        guard let keys else { return nil }
        guard let key = peer.key, let entry = keys[key] else { return .keyNotAuthorized }
        return need.allows(entry.role) ? nil : .role(need: need, have: entry.role)
    }

    /// A node message (register, heartbeat, ack, deregister) names its node in `sender`; the
    /// recipient, if any, is the coordinator.
    public static func checkSender(_ envelope: Envelope, node: String) -> Refusal? {
        checkSender(sender: envelope.sender, recipient: envelope.recipient, node: node)
    }

    public static func checkSender(_ header: EnvelopeHeader, node: String) -> Refusal? {
        checkSender(sender: header.sender, recipient: header.recipient, node: node)
    }

    private static func checkSender(sender: String, recipient: String, node: String) -> Refusal? {
        if sender != node { return .senderMismatch(sender: sender, node: node) }
        if !recipient.isEmpty && recipient != "coordinator" { return .wrongRecipient(recipient) }
        return nil
    }

    /// Whether `peer`'s key may register node `id` (before membership's own rules).
    public func mayRegister(_ id: String, from peer: Peer) -> Refusal? {
        if let r = admit(peer, need: .agent) { return r }
        guard let keys, let key = peer.key, let entry = keys[key] else { return nil }
        return entry.mayClaim(id) ? nil : .mayNotClaim(node: id)
    }

    /// A registration was accepted: the node speaks from `peer` from now on.
    public mutating func bind(_ id: String, to peer: Peer) { bound[id] = peer }

    /// The node left or died: it has no route until it registers again.
    public mutating func unbind(_ id: String) { bound[id] = nil }

    /// The connection commands for the node go to.
    public func route(_ id: String) -> [UInt8]? { bound[id]?.connection }

    public var boundCount: Int { bound.count }

    /// Whether `peer` may speak for registered node `id` (heartbeat, ack, deregister). A node not
    /// bound yet (restored by a restarted coordinator) is bound to the first peer whose key may
    /// claim it.
    public mutating func speaksFor(_ id: String, _ peer: Peer) -> Refusal? {
        // A key that may never claim the id is told so (NOT_AUTHORIZED) before the binding is looked at.
        if let r = mayRegister(id, from: peer) { return r }
        if let b = bound[id] { return b == peer ? nil : .notBound(node: id) }
        bound[id] = peer
        return nil
    }
}
