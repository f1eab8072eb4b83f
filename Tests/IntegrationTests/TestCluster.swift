import Cluster
import Experiments
import Foundation
import Protocol

/// A real testbed of `strato` processes for one test, in its own temporary directory and on its
/// own IPC endpoint (so tests never collide on ports). `shutdown()` stops every process it started;
/// call it in a `defer`.
final class TestCluster {
    let directory: String
    let topology: Topology
    private(set) var bed: Testbed
    private var extra: [pid_t] = []

    /// The `strato` binary built beside the test bundle (or $STRATO_BIN).
    static var stratoBinary: String {
        if let b = ProcessInfo.processInfo.environment["STRATO_BIN"] { return b }
        let dir = (ProcessLauncher.selfExecutable as NSString).deletingLastPathComponent
        return dir + "/strato"
    }

    /// Runs `strato ARGS` to its end, its output into `log` (killed after `timeout` seconds): its
    /// exit status (128 + the signal when a signal ended it) and what it printed.
    static func runStrato(_ args: [String], log: String, newSession: Bool = true, timeout: Double = 120) throws -> (status: Int32, output: String) {
        let pid = try ProcessLauncher.spawn(stratoBinary, args, logFile: log, newSession: newSession)
        var status: Int32 = 0
        let deadline = Date().addingTimeInterval(timeout)
        while waitpid(pid, &status, WNOHANG) == 0 {
            if Date() > deadline { kill(pid, SIGKILL); waitpid(pid, &status, 0); break }
            usleep(20_000)
        }
        let code = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + status & 0x7F
        return (code, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    init(name: String, security: Topology.Security = .curve, nodes: String? = nil, coordinatorExtra: String = "", network: String = "",
         timeout: Double = 30) throws {
        directory = NSTemporaryDirectory() + "strato-it-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let yaml = """
            name: \(name)
            security: \(security.rawValue)
            coordinator:
              endpoint: ipc://\(directory)/control.sock
            \(coordinatorExtra)
            \(network)
            nodes:
            \(nodes ?? TestCluster.allKinds)
            """
        let file = directory + "/topology.yaml"
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        topology = try Topology.load(file: file)
        bed = try Testbed.up(topology: topology, runDirectory: directory + "/run", executable: TestCluster.stratoBinary)
        do {
            _ = try bed.waitUntilAlive(timeoutSeconds: timeout)
        } catch {
            shutdown()
            throw error
        }
    }

    static let allKinds = """
          - {id: gpu-a, kind: gpu, site: cloud, gpu: {model: A100-80GB, count: 4}}
          - {id: gpu-b, kind: gpu, site: cloud, gpu: {model: T4, count: 2}}
          - {id: mem-a, kind: memory, site: cloud, tiers: [dram:256MiB, cxl:512MiB, nvme:512MiB]}
          - {id: render-edge, kind: render, site: edge, render: {slots: 4, gpu: L4}}
          - {id: render-cloud, kind: render, site: cloud, render: {slots: 16, gpu: A10}}
        """

    func client() throws -> OperatorClient {
        try OperatorClient(endpoint: bed.endpoint, keysDirectory: bed.keysDirectory)
    }

    func status() throws -> StatusReply {
        let c = try client()
        defer { c.close() }
        return try c.status(timeoutMs: 3000)
    }

    func node(_ id: String) throws -> NodeStatus? {
        try status().nodes.first { $0.nodeID == id }
    }

    func pid(of name: String) -> pid_t {
        bed.processes.first { $0.name == name }!.pid
    }

    func signal(_ name: String, _ sig: Int32) {
        kill(pid(of: name), sig)
    }

    /// SIGSTOP, then waits until every thread of the process is stopped: kill(2) returns before a
    /// thread running on the other core has taken the signal, and a write it is making then lands
    /// after the caller's next look at the disk.
    func freeze(_ name: String, seconds: Double = 5) throws {
        let p = pid(of: name)
        kill(p, SIGSTOP)
        try waitFor("\(name) stopped (every thread in state T)", seconds: seconds) {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(p)/task")) ?? []
            return !tasks.isEmpty && tasks.allSatisfy { tid in
                // /proc/PID/task/TID/stat: "tid (comm) S ..."; comm may hold spaces, so read after the last ')'.
                guard let stat = try? String(contentsOfFile: "/proc/\(p)/task/\(tid)/stat", encoding: .utf8),
                      let close = stat.lastIndex(of: ")") else { return true }   // a thread that just exited
                let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
                return state == "T" || state == "t"
            }
        }
    }

    /// Starts another process with the same binary (e.g. a second coordinator or a rogue agent).
    @discardableResult
    func spawn(_ name: String, _ args: [String]) throws -> pid_t {
        let pid = try ProcessLauncher.spawn(TestCluster.stratoBinary, args, logFile: directory + "/run/logs/\(name).log")
        extra.append(pid)
        return pid
    }

    /// Restarts a process of the testbed with its original arguments (after it was killed).
    func restart(_ name: String) throws {
        guard let i = bed.processes.firstIndex(where: { $0.name == name }) else { return }
        let p = bed.processes[i]
        bed.processes[i].pid = try ProcessLauncher.spawn(TestCluster.stratoBinary, p.arguments, logFile: p.log)
    }

    /// Polls `condition` every 50 ms until it holds or `seconds` pass; returns the time it took.
    @discardableResult
    func waitFor(_ what: String, seconds: Double, _ condition: () throws -> Bool) throws -> Double {
        let start = Date()
        while Date().timeIntervalSince(start) < seconds {
            if (try? condition()) == true { return Date().timeIntervalSince(start) }
            usleep(50_000)
        }
        throw TestFailure("timed out after \(seconds) s waiting for: \(what)\n\(logs())")
    }

    /// Waits until every request in `ids` has a result at the coordinator; their records.
    func waitFinished(_ ids: [String], client: OperatorClient, seconds: Double) throws -> [String: RequestRecord] {
        var out: [String: RequestRecord] = [:]
        try waitFor("requests \(ids) to finish", seconds: seconds) {
            let all = try client.requests(includeRequests: true).requests
            out = Dictionary(uniqueKeysWithValues: all.filter { ids.contains($0.requestID) }.map { ($0.requestID, $0) })
            return out.count == ids.count && out.values.allSatisfy { $0.finished >= 0 }
        }
        return out
    }

    func logs() -> String {
        bed.processes.map { "--- \($0.name)\n" + Testbed.tail($0.log, lines: 8) }.joined(separator: "\n")
    }

    func shutdown() {
        for p in extra { ProcessLauncher.terminate(p, grace: 2) }
        bed.down()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
