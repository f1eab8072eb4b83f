import Foundation

/// What a client key may do at the coordinator (the second field of an `authorized_keys` line).
///
/// - `agent`: registers nodes (only the ids its line pins, when it pins any), heartbeats, acks.
/// - `operator`: changes state (submit, drain, faults, migrations, commands to nodes) and reads.
/// - `driver`: submits jobs and requests (a workload driver) and reads.
/// Status and other reads are open to every authorised key.
public enum ClientRole: String, Sendable, CaseIterable, Comparable {
    case agent, `operator`, driver
    public static func < (a: ClientRole, b: ClientRole) -> Bool { a.rawValue < b.rawValue }
}

/// One `authorized_keys` line: `PUBLIC-KEY ROLE [nodes=ID,ID,PREFIX*]`.
public struct AuthorizedKey: Sendable, Equatable {
    public var publicKey: String
    public var role: ClientRole
    /// Node ids this key may claim (`prefix*` matches by prefix); empty: any id (a shared agent key).
    public var nodes: [String]

    public init(publicKey: String, role: ClientRole, nodes: [String] = []) {
        self.publicKey = publicKey; self.role = role; self.nodes = nodes
    }

    /// Whether a node with this id may be registered (and spoken for) with this key.
    public func mayClaim(_ nodeID: String) -> Bool {
        guard role == .agent else { return false }
        if nodes.isEmpty { return true }
        return nodes.contains { $0.hasSuffix("*") ? nodeID.hasPrefix(String($0.dropLast())) : $0 == nodeID }
    }

    public var line: String { "\(publicKey) \(role.rawValue)" + (nodes.isEmpty ? "" : " nodes=" + nodes.joined(separator: ",")) }
}

/// A directory of CURVE keys for one testbed, as written by `strato keys generate DIR`:
///
///     coordinator.key    the coordinator's key pair (keep secret)
///     coordinator.pub    its public key, which every client needs
///     agent.key          a shared agent key pair (any node id; for agents started by hand)
///     agents/NAME.key    one key pair per agent process, pinned to the node ids it hosts
///     operator.key       the key pair operator tools (strato status, …) use
///     driver.key         the key pair workload drivers use (submit jobs and requests, read)
///     authorized_keys    `PUBLIC-KEY ROLE [nodes=ID,…]` per line ('#' comments); the coordinator
///                        admits these keys and reloads the file when it changes
public struct KeyDirectory {
    public enum KeyError: Error, CustomStringConvertible {
        case missing(String)
        case invalid(file: String, line: Int, reason: String)

        public var description: String {
            switch self {
            case .missing(let path): return "key file \(path) does not exist (create keys with `strato keys generate DIR`)"
            case let .invalid(file, line, reason): return "\(file):\(line): \(reason)"
            }
        }
    }

    public let path: String

    public init(path: String) { self.path = path }

    /// Writes a fresh set of keys; refuses to overwrite an existing coordinator key. `agents` adds
    /// one key pair per agent process (`agents/NAME.key`), pinned to the node ids given for it.
    @discardableResult
    public static func generate(at path: String, agents: [(name: String, nodes: [String])] = []) throws -> KeyDirectory {
        let fm = FileManager.default
        try fm.createDirectory(atPath: path, withIntermediateDirectories: true)
        let dir = KeyDirectory(path: path)
        if fm.fileExists(atPath: dir.file("coordinator.key")) {
            throw KeyError.invalid(file: dir.file("coordinator.key"), line: 0, reason: "already exists; refusing to overwrite keys")
        }
        for a in agents where !isValidAgentName(a.name) {
            throw KeyError.invalid(file: dir.file("agents"), line: 0, reason: "'\(a.name)' is not a usable agent name (letters, digits, '-', '_', '.')")
        }
        let coordinator = try CurveKeyPair.generate()
        try write(coordinator, role: "coordinator", to: dir.file("coordinator.key"))
        try (coordinator.publicKey + "\n").write(toFile: dir.file("coordinator.pub"), atomically: true, encoding: .utf8)
        var lines: [AuthorizedKey] = []
        for (name, role) in [("agent", ClientRole.agent), ("operator", .operator), ("driver", .driver)] {
            let pair = try CurveKeyPair.generate()
            try write(pair, role: role.rawValue, to: dir.file("\(name).key"))
            chmod(dir.file("\(name).key"), 0o600)
            lines.append(AuthorizedKey(publicKey: pair.publicKey, role: role))
        }
        if !agents.isEmpty { try fm.createDirectory(atPath: dir.file("agents"), withIntermediateDirectories: true) }
        for a in agents {
            let pair = try CurveKeyPair.generate()
            try write(pair, role: "agent \(a.name)", to: dir.agentKeyFile(a.name))
            chmod(dir.agentKeyFile(a.name), 0o600)
            lines.append(AuthorizedKey(publicKey: pair.publicKey, role: .agent, nodes: a.nodes))
        }
        let authorized = "# Public keys the coordinator admits: KEY ROLE [nodes=ID,ID,PREFIX*]\n"
            + "# Roles: agent (registers the nodes it pins, or any id without nodes=), operator, driver.\n"
            + "# The coordinator reloads this file when it changes (or on SIGHUP).\n"
            + lines.map(\.line).joined(separator: "\n") + "\n"
        try authorized.write(toFile: dir.file("authorized_keys"), atomically: true, encoding: .utf8)
        chmod(dir.file("coordinator.key"), 0o600)
        return dir
    }

    /// Adds per-agent key pairs for the agents that have none yet (an older key directory, or a
    /// topology that grew), appending their pinned lines to authorized_keys, and re-pins an agent
    /// whose key exists to the node ids given now (a topology whose process hosts other ids: a
    /// generated compose file with 2 laptops where it had 3). Returns the names added or re-pinned.
    @discardableResult
    public func addAgents(_ agents: [(name: String, nodes: [String])]) throws -> [String] {
        let fm = FileManager.default
        for a in agents where !KeyDirectory.isValidAgentName(a.name) {
            throw KeyError.invalid(file: file("agents"), line: 0, reason: "'\(a.name)' is not a usable agent name (letters, digits, '-', '_', '.')")
        }
        let missing = agents.filter { !fm.fileExists(atPath: agentKeyFile($0.name)) }
        // Existing keys whose pinned ids differ from those wanted now: public key → wanted ids.
        let entries = try authorizedEntries()
        var repin: [String: (name: String, nodes: [String])] = [:]
        for a in agents where fm.fileExists(atPath: agentKeyFile(a.name)) {
            let key = try KeyDirectory.readPair(agentKeyFile(a.name)).publicKey
            if entries[key]?.nodes != a.nodes { repin[key] = a }
        }
        guard !missing.isEmpty || !repin.isEmpty else { return [] }
        var lines = try KeyDirectory.read(file("authorized_keys")).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        var listed: Set<String> = []
        for i in lines.indices {
            let key = lines[i].split(separator: " ").first.map(String.init) ?? ""
            if let a = repin[key] {
                lines[i] = AuthorizedKey(publicKey: key, role: .agent, nodes: a.nodes).line
                listed.insert(key)
            }
        }
        // A key file whose public key authorized_keys lacks (removed by hand): listed again.
        for (key, a) in repin where !listed.contains(key) { lines.append(AuthorizedKey(publicKey: key, role: .agent, nodes: a.nodes).line) }
        if !missing.isEmpty { try fm.createDirectory(atPath: file("agents"), withIntermediateDirectories: true) }
        for a in missing {
            let pair = try CurveKeyPair.generate()
            try KeyDirectory.write(pair, role: "agent \(a.name)", to: agentKeyFile(a.name))
            chmod(agentKeyFile(a.name), 0o600)
            lines.append(AuthorizedKey(publicKey: pair.publicKey, role: .agent, nodes: a.nodes).line)
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: file("authorized_keys"), atomically: true, encoding: .utf8)
        return missing.map(\.name) + repin.values.map(\.name).sorted()
    }

    static func isValidAgentName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 128 && !name.hasPrefix(".")
            && name.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0) }
    }

    /// The key pair file of one agent process written by `generate(at:agents:)`.
    public func agentKeyFile(_ name: String) -> String { file("agents/\(name).key") }

    public func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    public func coordinatorKeys() throws -> CurveKeyPair { try KeyDirectory.readPair(file("coordinator.key")) }
    public func agentKeys() throws -> CurveKeyPair { try KeyDirectory.readPair(file("agent.key")) }
    public func operatorKeys() throws -> CurveKeyPair { try KeyDirectory.readPair(file("operator.key")) }

    public func coordinatorPublicKey() throws -> String {
        let f = file("coordinator.pub")
        let text = try KeyDirectory.read(f).trimmingCharacters(in: .whitespacesAndNewlines)
        guard CurveKeyPair.isValidZ85Key(text) else { throw KeyError.invalid(file: f, line: 1, reason: "not a 40-character Z85 key") }
        return text
    }

    public func driverKeys() throws -> CurveKeyPair { try KeyDirectory.readPair(file("driver.key")) }

    /// Every public key `authorized_keys` admits.
    public func authorizedKeys() throws -> Set<String> { Set(try authorizedEntries().keys) }

    /// Public keys of one role (the data plane admits agent keys only).
    public func authorizedKeys(role: ClientRole) throws -> Set<String> {
        Set(try authorizedEntries().values.filter { $0.role == role }.map(\.publicKey))
    }

    /// `authorized_keys` parsed: each line `PUBLIC-KEY ROLE [nodes=ID,…]`; a bad line is an error
    /// naming the file and line.
    public func authorizedEntries() throws -> [String: AuthorizedKey] {
        try KeyDirectory.parseAuthorized(try KeyDirectory.read(file("authorized_keys")), file: file("authorized_keys"))
    }

    public static func parseAuthorized(_ text: String, file f: String) throws -> [String: AuthorizedKey] {
        var keys: [String: AuthorizedKey] = [:]
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let fields = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            let key = fields[0]
            guard CurveKeyPair.isValidZ85Key(key) else {
                throw KeyError.invalid(file: f, line: i + 1, reason: "'\(key)' is not a 40-character Z85 public key")
            }
            guard fields.count >= 2 else {
                throw KeyError.invalid(file: f, line: i + 1, reason: "no role after the key (agent, operator or driver)")
            }
            guard let role = ClientRole(rawValue: fields[1]) else {
                throw KeyError.invalid(file: f, line: i + 1, reason: "unknown role '\(fields[1])' (agent, operator or driver)")
            }
            var entry = AuthorizedKey(publicKey: key, role: role)
            for extra in fields.dropFirst(2) {
                guard extra.hasPrefix("nodes="), role == .agent else {
                    throw KeyError.invalid(file: f, line: i + 1, reason: "unexpected '\(extra)' (only an agent key takes nodes=ID,ID,PREFIX*)")
                }
                let ids = extra.dropFirst("nodes=".count).split(separator: ",").map(String.init)
                guard !ids.isEmpty, ids.allSatisfy({ !$0.isEmpty && $0 != "*" }) else {
                    throw KeyError.invalid(file: f, line: i + 1, reason: "nodes= needs node ids or prefixes ending in '*'")
                }
                entry.nodes += ids
            }
            guard keys[key] == nil else { throw KeyError.invalid(file: f, line: i + 1, reason: "key listed twice") }
            keys[key] = entry
        }
        return keys
    }

    public static func readPair(_ f: String) throws -> CurveKeyPair {
        var pub: String?, sec: String?
        for (i, raw) in try read(f).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { throw KeyError.invalid(file: f, line: i + 1, reason: "expected 'public-key = …' or 'secret-key = …'") }
            let value = parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            guard CurveKeyPair.isValidZ85Key(value) else { throw KeyError.invalid(file: f, line: i + 1, reason: "not a 40-character Z85 key") }
            switch parts[0] {
            case "public-key": pub = value
            case "secret-key": sec = value
            default: throw KeyError.invalid(file: f, line: i + 1, reason: "unknown field '\(parts[0])'")
            }
        }
        guard let p = pub, let s = sec else { throw KeyError.invalid(file: f, line: 0, reason: "needs both public-key and secret-key") }
        return CurveKeyPair(publicKey: p, secretKey: s)
    }

    /// Writes a key pair file (`public-key = …`, `secret-key = …`), readable by its owner only.
    public static func write(_ pair: CurveKeyPair, role: String, to f: String) throws {
        let text = "# Stratolab CURVE key pair: \(role). Keep the secret key private.\npublic-key = \"\(pair.publicKey)\"\nsecret-key = \"\(pair.secretKey)\"\n"
        try text.write(toFile: f, atomically: true, encoding: .utf8)
    }

    public static func read(_ f: String) throws -> String {
        guard FileManager.default.fileExists(atPath: f) else { throw KeyError.missing(f) }
        return try String(contentsOfFile: f, encoding: .utf8)
    }
}
