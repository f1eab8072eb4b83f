import Foundation

/// A directory of CURVE keys for one testbed, as written by `strato keys generate DIR`:
///
///     coordinator.key   the coordinator's key pair (keep secret)
///     coordinator.pub   its public key, which every client needs
///     agent.key         the key pair agents use
///     operator.key      the key pair operator tools (strato status, …) use
///     authorized_keys   public keys the coordinator admits, one per line ('#' comments)
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

    /// Writes a fresh set of keys; refuses to overwrite an existing coordinator key.
    @discardableResult
    public static func generate(at path: String) throws -> KeyDirectory {
        let fm = FileManager.default
        try fm.createDirectory(atPath: path, withIntermediateDirectories: true)
        let dir = KeyDirectory(path: path)
        if fm.fileExists(atPath: dir.file("coordinator.key")) {
            throw KeyError.invalid(file: dir.file("coordinator.key"), line: 0, reason: "already exists; refusing to overwrite keys")
        }
        let coordinator = try CurveKeyPair.generate()
        let agent = try CurveKeyPair.generate()
        let op = try CurveKeyPair.generate()
        try write(coordinator, role: "coordinator", to: dir.file("coordinator.key"))
        try (coordinator.publicKey + "\n").write(toFile: dir.file("coordinator.pub"), atomically: true, encoding: .utf8)
        try write(agent, role: "agent", to: dir.file("agent.key"))
        try write(op, role: "operator", to: dir.file("operator.key"))
        let authorized = "# Public keys the coordinator admits, one per line.\n\(agent.publicKey) agent\n\(op.publicKey) operator\n"
        try authorized.write(toFile: dir.file("authorized_keys"), atomically: true, encoding: .utf8)
        for name in ["coordinator.key", "agent.key", "operator.key"] {
            chmod(dir.file(name), 0o600)
        }
        return dir
    }

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

    public func authorizedKeys() throws -> Set<String> {
        let f = file("authorized_keys")
        var keys = Set<String>()
        for (i, raw) in try KeyDirectory.read(f).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let key = String(line.split(separator: " ")[0])
            guard CurveKeyPair.isValidZ85Key(key) else {
                throw KeyError.invalid(file: f, line: i + 1, reason: "'\(key)' is not a 40-character Z85 public key")
            }
            keys.insert(key)
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

    static func write(_ pair: CurveKeyPair, role: String, to f: String) throws {
        let text = "# Stratolab CURVE key pair: \(role). Keep the secret key private.\npublic-key = \"\(pair.publicKey)\"\nsecret-key = \"\(pair.secretKey)\"\n"
        try text.write(toFile: f, atomically: true, encoding: .utf8)
    }

    static func read(_ f: String) throws -> String {
        guard FileManager.default.fileExists(atPath: f) else { throw KeyError.missing(f) }
        return try String(contentsOfFile: f, encoding: .utf8)
    }
}
