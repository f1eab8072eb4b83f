import Cluster
import Foundation

/// Experiments on containers: `compose/docker-compose.yml` brought up with the repository's
/// scripts (image built offline, dockerd started where none runs), tracing switched on through
/// the environment, the coordinator reached on its container address with the operator key, and
/// faults applied with docker: `docker kill`/`start`, `pause`/`unpause`, `network
/// disconnect`/`connect`, `docker update --cpus`, and `tc tbf` in the container's network
/// namespace for bandwidth (this kernel has tbf, not netem). Added latency is Stratolab's own
/// transport emulation (a control file copied into the container).
public class ComposePlatform: ExperimentPlatform, FaultBackend {
    public var name: String { "compose" }
    public let repository: String
    public let project: String
    var keys: String { repository + "/.strato/compose/keys" }
    private var composeCommand: [String] = []
    /// The scripts that take this platform's testbed up and down (`scripts/NAME`).
    var upScript: String { "compose-up" }
    var downScript: String { "compose-down" }

    public init(repository: String = FileManager.default.currentDirectoryPath, project: String = ProcessInfo.processInfo.environment["STRATO_PROJECT"] ?? "stratolab") {
        self.repository = repository
        self.project = project
    }

    public var faults: FaultBackend { self }

    struct CommandError: Error, CustomStringConvertible { let description: String }

    /// Runs a command, returns its output; throws with the output when it fails.
    @discardableResult
    func sh(_ args: [String], environment: [String: String] = [:], allowFailure: Bool = false) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: repository)
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let out = String(decoding: data, as: UTF8.self)
        if p.terminationStatus != 0 && !allowFailure {
            throw CommandError(description: "`\(args.joined(separator: " "))` failed (exit \(p.terminationStatus)): \(out.suffix(1500))")
        }
        return out
    }

    /// The container of a compose service (running or stopped).
    func container(_ service: String) throws -> String {
        let id = try sh(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=\(project)",
                         "--filter", "label=com.docker.compose.service=\(service)"])
            .split(separator: "\n").first.map(String.init) ?? ""
        guard !id.isEmpty else { throw CommandError(description: "no container for service '\(service)' in compose project \(project)") }
        return id
    }

    var services: [String] = []
    /// Each node's configured link (the topology's `network:`), applied through its control file.
    var base: [String: NetworkConditions] = [:]
    /// Faults' additions to a node's link in its transport: added latency, and (swarm) a partition.
    var addedLatencyMs: [String: Double] = [:]
    var partitioned: Set<String> = []

    /// The compose file of the run: generated from the spec's topology (`ComposeFile`), so every
    /// setting of the spec (policies, time scale, KV scale, render policy and script) and every
    /// node (world server and players included) is in it.
    public var composeFile: String { repository + "/.strato/compose/generated/\(project).yml" }

    /// The environment of every script call: the project, tracing, and the generated file.
    var env: [String: String] = [:]

    public func up(_ spec: ExperimentSpec, progress: (String) -> Void) throws -> OperatorClient {
        guard FileManager.default.fileExists(atPath: repository + "/scripts/\(upScript)") else {
            throw CommandError(description: "--on \(name) runs from the repository root (scripts/\(upScript) not found in \(repository))")
        }
        let yaml: String
        do { yaml = try ComposeFile.render(spec.topology, source: spec.file, keysDefault: keys) } catch { throw CommandError(description: "--on \(name): \(error)") }
        try FileManager.default.createDirectory(atPath: (composeFile as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try yaml.write(toFile: composeFile, atomically: true, encoding: .utf8)
        progress("compose file for topology '\(spec.topology.name)': \(composeFile) (\(spec.topology.nodes.count) node services, \(spec.topology.nodeIDs.count) nodes)")
        env = ["STRATO_PROJECT": project, "STRATO_TRACE": "1", "STRATO_TRACE_DIR": "/var/lib/strato/trace",
               "STRATO_TRACE_SAMPLE": "\(spec.heartbeatSample)", "STRATO_COMPOSE_FILE": composeFile]
        progress("building the image (scripts/build-image) …")
        try sh(["bash", "scripts/build-image"], environment: env)
        // A fresh project for every run: results must hold only this run.
        try sh(["bash", "scripts/\(downScript)", "--volumes"], environment: env, allowFailure: true)
        addedLatencyMs = [:]; partitioned = []; base = [:]
        try start(spec, progress: progress)
        let wanted = spec.topology.nodes.map(\.id).sorted()
        guard services == wanted else {
            throw CommandError(description: "the generated \(composeFile) deploys nodes \(services.joined(separator: ", ")), not the spec's topology (\(wanted.joined(separator: ", ")))")
        }
        // The topology's network conditions, in the agents' own transport (no netem here either):
        // the generated commands carry them as --net-* flags; a fault's control file adds to them.
        for n in spec.topology.nodes { if let c = spec.topology.network[n.siteName], !c.isNone { base[n.id] = c } }
        for (node, c) in base.sorted(by: { $0.key < $1.key }) { progress("link of \(node): \(c) (emulated in the transport)") }
        let coordinator = try container("coordinator")
        let ip = try address(ofCoordinator: coordinator)
        progress("coordinator at tcp://\(ip):7700 (container \(coordinator.prefix(12)))")
        return try OperatorClient(endpoint: "tcp://\(ip):7700", keysDirectory: spec.topology.security == .curve ? keys : nil)
    }

    /// Brings the generated file up and sets `services` (the node services it deploys).
    func start(_ spec: ExperimentSpec, progress: (String) -> Void) throws {
        let compose = try sh(["bash", "-c", "source scripts/lib/compose.sh && select_compose && echo \"${COMPOSE[*]}\""], environment: env)
        composeCommand = compose.split(separator: "\n").last.map { $0.split(separator: " ").map(String.init) } ?? []
        services = try sh(composeCommand + ["config", "--services"], environment: env).split(separator: "\n").map(String.init).filter { $0 != "coordinator" }.sorted()
        progress("compose up (project \(project)) …")
        try sh(["bash", "scripts/compose-up", "--timeout", "\(Int(spec.startTimeout))"], environment: env)
    }

    /// An address of the coordinator's container this host reaches (its first network's).
    func address(ofCoordinator container: String) throws -> String {
        let ips = try sh(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", container])
            .split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
        guard let ip = ips.first else { throw CommandError(description: "the coordinator container has no address") }
        return ip
    }

    public func down(progress: (String) -> Void) {
        // Agents first (each ships its last batch on SIGTERM), then the coordinator; the
        // containers stay, stopped, until their files are collected.
        for s in services {
            if let c = try? container(s) { _ = try? sh(["docker", "stop", "-t", "5", c], allowFailure: true); progress("stopped \(s)") }
        }
        if let c = try? container("coordinator") { _ = try? sh(["docker", "stop", "-t", "5", c], allowFailure: true); progress("stopped coordinator") }
    }

    public func collect(traceDir: String, logDir: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: traceDir + "/spools", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: logDir, withIntermediateDirectories: true)
        if let c = try? container("coordinator") {
            try? sh(["docker", "cp", "\(c):/var/lib/strato/state/trace", traceDir + "/collector"])
            let log = try sh(["docker", "logs", c], allowFailure: true)
            try log.write(toFile: logDir + "/coordinator.log", atomically: true, encoding: .utf8)
        }
        for s in services {
            guard let c = try? container(s) else { continue }
            try? sh(["docker", "cp", "\(c):/var/lib/strato/trace", traceDir + "/spools/\(s)"])
            let log = try sh(["docker", "logs", c], allowFailure: true)
            try log.write(toFile: logDir + "/\(s).log", atomically: true, encoding: .utf8)
        }
        try sh(["bash", "scripts/compose-down", "--volumes"], environment: env, allowFailure: true)
    }

    // MARK: Faults

    public func kill(_ node: String) throws { try sh(["docker", "kill", try container(node)]) }
    public func restart(_ node: String) throws { try sh(["docker", "start", try container(node)]) }
    public func pause(_ node: String) throws { try sh(["docker", "pause", try container(node)]) }
    public func resume(_ node: String) throws { try sh(["docker", "unpause", try container(node)]) }
    public func crashCoordinator() throws { try sh(["docker", "kill", try container("coordinator")]) }
    public func restartCoordinator() throws { try sh(["docker", "start", try container("coordinator")]) }

    private var detached: [String: [String]] = [:]

    /// Disconnects the container from every network it is on; healing reconnects it under its
    /// service name, so the others find it again.
    public func partition(_ node: String, on: Bool) throws {
        let c = try container(node)
        if on {
            let nets = try sh(["docker", "inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", c])
                .split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
            detached[node] = nets
            for n in nets { try sh(["docker", "network", "disconnect", "-f", n, c]) }
        } else {
            for n in detached.removeValue(forKey: node) ?? [] { try sh(["docker", "network", "connect", "--alias", node, n, c]) }
        }
    }

    public func throttleCPU(_ node: String, cpu: Double?) throws {
        // 0 removes the limit.
        try sh(["docker", "update", "--cpus", cpu.map { String(format: "%.2f", $0) } ?? "0", try container(node)])
    }

    /// The node's link as its transport should emulate it now: configured, plus the faults' latency
    /// and partition.
    func currentLink(_ node: String) -> NetworkConditions {
        var link = base[node] ?? .none
        link.delayMs += addedLatencyMs[node] ?? 0
        if partitioned.contains(node) { link.partitioned = true }
        return link
    }

    /// Copies a control file into the agent's container: the conditions its transport emulates.
    func writeControl(_ node: String, _ c: NetworkConditions) throws {
        let tmp = NSTemporaryDirectory() + "strato-net-\(node)-\(getpid()).json"
        try JSONEncoder().encode(c).write(to: URL(fileURLWithPath: tmp))
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        try sh(["docker", "cp", tmp, "\(try container(node)):/var/lib/strato/net/\(node).json"])
    }

    /// Bandwidth: a tbf qdisc on the container's eth0 (entered with nsenter). Latency: the agent's
    /// own transport, through its network control file.
    public func degradeLink(_ node: String, latencyMs: Double?, bandwidthBytesPerSecond: Double?) throws {
        let c = try container(node)
        let pid = try sh(["docker", "inspect", "-f", "{{.State.Pid}}", c]).trimmingCharacters(in: .whitespacesAndNewlines)
        if let b = bandwidthBytesPerSecond {
            let kbit = max(8, Int(b * 8 / 1000))
            try sh(["nsenter", "-t", pid, "-n", "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf",
                    "rate", "\(kbit)kbit", "burst", "32kbit", "latency", "400ms"])
        } else {
            try sh(["nsenter", "-t", pid, "-n", "tc", "qdisc", "del", "dev", "eth0", "root"], allowFailure: true)
        }
        addedLatencyMs[node] = latencyMs
        try writeControl(node, currentLink(node))
    }
}
