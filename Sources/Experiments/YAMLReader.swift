import Foundation
import Scheduling
import Yams

/// An error in a YAML input file, naming the file, the line and the field, and what was expected:
/// the same error the data readers give (`DataError`).
public typealias SpecError = DataError

/// A typed view over a YAML node that remembers where it came from, so every error names the
/// file, line and field path (e.g. `nodes[2].gpu.count`).
public struct YAMLValue {
    public let node: Node
    public let file: String
    public let path: String

    public var line: Int { node.mark?.line ?? 0 }

    public static func load(file: String) throws -> YAMLValue {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw SpecError(file: file, line: 0, field: "(file)", message: "cannot read the file")
        }
        return try parse(text, file: file)
    }

    public static func parse(_ text: String, file: String) throws -> YAMLValue {
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw SpecError(file: file, line: 1, field: "(document)", message: "the file is empty")
            }
            return YAMLValue(node: node, file: file, path: "")
        } catch let e as SpecError {
            throw e
        } catch let e as YamlError {
            throw SpecError(file: file, line: YAMLValue.line(of: e), field: "(syntax)", message: "not valid YAML: \(e)")
        }
    }

    static func line(of error: YamlError) -> Int {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): return mark.line
        default: return 0
        }
    }

    func fail(_ message: String) -> SpecError {
        SpecError(file: file, line: node.mark?.line ?? 0, field: path.isEmpty ? "(document)" : path, message: message)
    }

    private func child(_ n: Node, _ key: String) -> YAMLValue {
        YAMLValue(node: n, file: file, path: path.isEmpty ? key : "\(path).\(key)")
    }

    /// The mapping's entries; errors on unknown keys so typos do not pass silently.
    public func mapping(allowed: Set<String>) throws -> [String: YAMLValue] {
        guard case .mapping(let m) = node else { throw fail("expected a mapping (key: value pairs), found \(kindName)") }
        var out: [String: YAMLValue] = [:]
        for (k, v) in m {
            guard case .scalar(let s) = k else { throw fail("mapping keys must be plain strings") }
            let key = s.string
            guard allowed.contains(key) else {
                let f = YAMLValue(node: k, file: file, path: path.isEmpty ? key : "\(path).\(key)")
                throw f.fail("unknown key '\(key)'; expected one of: \(allowed.sorted().joined(separator: ", "))")
            }
            if out[key] != nil { throw child(k, key).fail("key '\(key)' appears twice") }
            out[key] = child(v, key)
        }
        return out
    }

    public func sequence() throws -> [YAMLValue] {
        guard case .sequence(let s) = node else { throw fail("expected a list, found \(kindName)") }
        return s.enumerated().map { YAMLValue(node: $0.element, file: file, path: "\(path)[\($0.offset)]") }
    }

    public func string() throws -> String {
        guard case .scalar(let s) = node else { throw fail("expected a string, found \(kindName)") }
        return s.string
    }

    public func int(in range: ClosedRange<Int>? = nil) throws -> Int {
        guard case .scalar(let s) = node, let v = Int(s.string) else { throw fail("expected a whole number, found '\(describe)'") }
        if let r = range, !r.contains(v) { throw fail("\(v) is outside \(r.lowerBound)...\(r.upperBound)") }
        return v
    }

    public func double() throws -> Double {
        guard case .scalar(let s) = node, let v = Double(s.string), v.isFinite else { throw fail("expected a number, found '\(describe)'") }
        return v
    }

    public func bool() throws -> Bool {
        guard case .scalar(let s) = node else { throw fail("expected true or false, found \(kindName)") }
        switch s.string.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw fail("expected true or false, found '\(s.string)'")
        }
    }

    public func stringMap() throws -> [String: String] {
        guard case .mapping(let m) = node else { throw fail("expected a mapping of strings, found \(kindName)") }
        var out: [String: String] = [:]
        for (k, v) in m {
            guard case .scalar(let ks) = k, case .scalar(let vs) = v else { throw fail("labels must be plain key: value strings") }
            out[ks.string] = vs.string
        }
        return out
    }

    var kindName: String {
        switch node {
        case .scalar: return "a scalar"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    var describe: String {
        if case .scalar(let s) = node { return s.string }
        return kindName
    }
}
