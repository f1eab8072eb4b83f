import Cluster
import Foundation
import Protocol
import Wire

/// A testbed of local processes started from a topology, recorded in a run directory:
///
///     RUN/testbed.json   what runs: endpoint, keys, and each process's name, pid, arguments, log
///     RUN/logs/*.log     one log per process
///     RUN/state/         the coordinator's durable state (SQLite, WAL)
///     RUN/keys/          CURVE keys, when the topology asks for security
///     RUN/nvme/          backing directories of emulated NVMe tiers
///     RUN/net/           network control files: RUN/net/<node id>.json (JSON of NetworkConditions)
///                        replaces that agent's emulated network conditions while it exists
public struct Testbed: Codable {
    public struct Proc: Codable {
        public var name: String
        public var pid: Int32
        public var arguments: [String]
        public var log: String
    }

    public var topologyFile: String
    public var endpoint: String
    public var keysDirectory: String?
    public var executable: String
    public var runDirectory: String
    public var startedAt: Date
    public var processes: [Proc]
    public var nodeIDs: [String]

    public static let defaultRunDirectory = ProcessInfo.processInfo.environment["STRATO_RUN_DIR"] ?? ".strato/testbed"

    public static func recordPath(_ runDirectory: String) -> String { runDirectory + "/testbed.json" }

    public static func load(runDirectory: String) -> Testbed? {
        guard let data = FileManager.default.contents(atPath: recordPath(runDirectory)) else { return nil }
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return try? d.decode(Testbed.self, from: data)
    }

    public func save() throws {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        e.dateEncodingStrategy = .iso8601
        try e.encode(self).write(to: URL(fileURLWithPath: Testbed.recordPath(runDirectory)))
    }

    public var liveProcesses: [Proc] { processes.filter { ProcessLauncher.isAlive($0.pid) } }

    /// Starts the coordinator, waits for it to answer, then starts every agent.
    public static func up(topology: Topology, runDirectory: String, executable: String = ProcessLauncher.selfExecutable,
                          traceHeartbeatSample: UInt64? = nil, progress: (String) -> Void = { _ in }) throws -> Testbed {
        let fm = FileManager.default
        let run = (runDirectory as NSString).standardizingPath.hasPrefix("/") ? runDirectory
            : fm.currentDirectoryPath + "/" + runDirectory
        if let existing = load(runDirectory: run), !existing.liveProcesses.isEmpty {
            throw ProcessLauncher.LaunchError(description: "a testbed is already running from \(run) (\(existing.liveProcesses.count) processes); run `strato testbed down` first")
        }
        try fm.createDirectory(atPath: run + "/logs", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: run + "/net", withIntermediateDirectories: true)
        // A control file left by an earlier run would partition or slow a node from its first message.
        let stale = (try? fm.contentsOfDirectory(atPath: run + "/net").filter { $0.hasSuffix(".json") }) ?? []
        for f in stale { try fm.removeItem(atPath: run + "/net/" + f) }
        if !stale.isEmpty { progress("removed \(stale.count) network control file(s) left in \(run)/net") }
        var keys: String?
        if topology.security == .curve {
            keys = run + "/keys"
            // One key pair per agent process, pinned to the node ids it hosts: a process can speak
            // only for its own nodes.
            let agents = topology.nodes.map { (name: $0.id, nodes: topology.nodeIDs(of: $0)) }
            if !fm.fileExists(atPath: keys! + "/coordinator.key") {
                try KeyDirectory.generate(at: keys!, agents: agents)
                progress("generated CURVE keys in \(keys!) (one per agent process)")
            } else {
                let added = try KeyDirectory(path: keys!).addAgents(agents)
                if !added.isEmpty { progress("added \(added.count) agent key(s) to \(keys!)") }
            }
        }
        var bed = Testbed(topologyFile: topology.file, endpoint: topology.coordinator.endpoint, keysDirectory: keys,
                          executable: executable, runDirectory: run, startedAt: Date(), processes: [], nodeIDs: topology.nodeIDs)
        func start(_ name: String, _ args: [String]) throws {
            let log = run + "/logs/\(name).log"
            let pid = try ProcessLauncher.spawn(executable, args, logFile: log)
            bed.processes.append(Proc(name: name, pid: pid, arguments: args, log: log))
            try bed.save()
        }
        // With tracing, the coordinator records into its collector and every agent spools to RUN/trace.
        let traceArgs = traceHeartbeatSample.map { ["--trace-dir", run + "/trace", "--trace-sample", "\($0)"] } ?? []
        try start("coordinator", topology.coordinatorArguments(stateDirectory: run + "/state", keysDirectory: keys)
                  + (traceHeartbeatSample.map { ["--trace", "--trace-sample", "\($0)"] } ?? []))
        progress("coordinator started (pid \(bed.processes[0].pid)) on \(topology.coordinator.endpoint)")
        _ = try bed.waitForCoordinator(timeoutSeconds: 15)
        for node in topology.nodes {
            try start(node.id, topology.agentArguments(for: node, keysDirectory: keys, nvmeRoot: run + "/nvme",
                                                            netControlDirectory: run + "/net") + traceArgs)
        }
        progress("started \(topology.nodes.count) agent processes for \(topology.nodeIDs.count) nodes")
        return bed
    }

    /// Starts a stopped (killed) process again with the arguments it had; the record keeps the new pid.
    public mutating func restart(_ name: String) throws {
        guard let i = processes.firstIndex(where: { $0.name == name }) else {
            throw ProcessLauncher.LaunchError(description: "no process '\(name)' in this testbed")
        }
        let p = processes[i]
        if ProcessLauncher.isAlive(p.pid) { return }
        processes[i].pid = try ProcessLauncher.spawn(executable, p.arguments, logFile: p.log)
        try save()
    }

    public func process(named name: String) -> Proc? { processes.first { $0.name == name } }

    /// Polls the coordinator until it answers a status request.
    public func waitForCoordinator(timeoutSeconds: Double) throws -> StatusReply {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        var lastError: Error?
        while Date() < deadline {
            if let c = processes.first(where: { $0.name == "coordinator" }), !ProcessLauncher.isAlive(c.pid) {
                throw ProcessLauncher.LaunchError(description: "the coordinator exited; see \(c.log):\n" + Testbed.tail(c.log))
            }
            do {
                let client = try OperatorClient(endpoint: endpoint, keysDirectory: keysDirectory)
                defer { client.close() }
                return try client.status(timeoutMs: 500)
            } catch { lastError = error }
        }
        throw ProcessLauncher.LaunchError(description: "the coordinator did not answer within \(Int(timeoutSeconds)) s: \(lastError.map { "\($0)" } ?? "")")
    }

    /// Waits until every node of the testbed is alive; calls `progress` with each status seen.
    public func waitUntilAlive(timeoutSeconds: Double, progress: (StatusReply) -> Void = { _ in }) throws -> StatusReply {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        let client = try OperatorClient(endpoint: endpoint, keysDirectory: keysDirectory)
        defer { client.close() }
        var last: StatusReply?
        while Date() < deadline {
            if let s = try? client.status(timeoutMs: 1000) {
                last = s
                progress(s)
                let alive = Set(s.nodes.filter { $0.state == .alive }.map(\.nodeID))
                if nodeIDs.allSatisfy(alive.contains) { return s }
            }
            usleep(200_000)
        }
        let alive = Set(last?.nodes.filter { $0.state == .alive }.map(\.nodeID) ?? [])
        let missing = nodeIDs.filter { !alive.contains($0) }
        var detail = ""
        for p in processes where missing.contains(p.name) || missing.contains(where: { $0.hasPrefix(p.name + "-") }) {
            detail += "\n--- \(p.log)\n" + Testbed.tail(p.log)
        }
        throw ProcessLauncher.LaunchError(description: "not alive after \(Int(timeoutSeconds)) s: \(missing.joined(separator: ", "))" + detail)
    }

    /// Stops agents first, then the coordinator (so agents deregister cleanly).
    public func down(progress: (String) -> Void = { _ in }) {
        for p in processes.reversed() where p.name != "coordinator" {
            let clean = ProcessLauncher.terminate(p.pid, grace: 5)
            progress("stopped \(p.name) (pid \(p.pid))\(clean ? "" : " with SIGKILL")")
        }
        for p in processes where p.name == "coordinator" {
            let clean = ProcessLauncher.terminate(p.pid, grace: 5)
            progress("stopped coordinator (pid \(p.pid))\(clean ? "" : " with SIGKILL")")
        }
        try? FileManager.default.removeItem(atPath: Testbed.recordPath(runDirectory))
    }

    public static func tail(_ path: String, lines: Int = 15) -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "(no log)" }
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }
}
