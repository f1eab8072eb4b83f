import Cluster
import Foundation

/// Experiments on a Docker Swarm: the same generated compose file as `--on compose`, deployed as a
/// stack with `scripts/swarm-up` (a one-node swarm where this host is in none; the stack spreads
/// over every host of a swarm it joined). What differs from compose, and why:
/// - a swarm replaces a task whose container dies, so a `kill` fault kills the task's container
///   (SIGKILL, as on compose) and scales its service to 0 before the swarm's restart delay (5 s)
///   runs out; its end scales it back to 1: a new task, with a fresh filesystem but the same
///   named volumes (the coordinator's state);
/// - a swarm task cannot leave its overlay network, so a partition cuts the node off in its own
///   transport (its network control file), as on local processes;
/// - the coordinator is reached on its task container's address on `docker_gwbridge`, the bridge
///   this host keeps for its tasks' outside traffic (overlay addresses are not routed to the host),
///   so the coordinator's task must run on this host (the file pins it to a manager);
/// - teardown stops each task's container (SIGTERM, agents first, so each ships its last trace
///   batch) and then scales its service to 0, which keeps the stopped containers until every
///   task's trace and log are collected; a node killed and brought back has two tasks, and both
///   are collected (the killed one from the spool and log copied out at the kill, when the swarm
///   has removed its container since).
public final class SwarmPlatform: ComposePlatform {
    public override var name: String { "swarm" }
    override var upScript: String { "swarm-up" }
    override var downScript: String { "swarm-down" }

    private func service(_ node: String) -> String { "\(project)_\(node)" }

    /// Every container of a service's tasks, newest first.
    func containers(_ node: String) throws -> [String] {
        try sh(["docker", "ps", "-aq", "--filter", "label=com.docker.swarm.service.name=\(service(node))"])
            .split(separator: "\n").map(String.init).filter { !$0.isEmpty }
    }

    /// The running task's container of a service on this host; nil when none runs.
    func runningContainer(_ node: String) throws -> String? {
        try sh(["docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name=\(service(node))", "--filter", "status=running"])
            .split(separator: "\n").first.map(String.init)
    }

    /// The running task's container of a service on this host, else its newest.
    override func container(_ node: String) throws -> String {
        if let running = try runningContainer(node) { return running }
        guard let newest = try containers(node).first else {
            throw CommandError(description: "no task container of service \(service(node)) on this host (docker service ps \(service(node)))")
        }
        return newest
    }

    /// The coordinator's address this run's operator connection was given.
    private var reachedAt: String?

    override func start(_ spec: ExperimentSpec, progress: (String) -> Void) throws {
        reachedAt = nil; tasksAtDown = [:]; stashed = [:]
        try? FileManager.default.removeItem(atPath: stashRoot)
        progress("docker stack deploy (stack \(project)) …")
        try sh(["bash", "scripts/swarm-up", "--timeout", "\(Int(spec.startTimeout))"], environment: env)
        services = try sh(["docker", "stack", "services", project, "--format", "{{.Name}}"])
            .split(separator: "\n").map { String($0.dropFirst(project.count + 1)) }.filter { !$0.isEmpty && $0 != "coordinator" }.sorted()
    }

    /// The coordinator task's address on `docker_gwbridge`.
    override func address(ofCoordinator container: String) throws -> String {
        let full = try sh(["docker", "inspect", "-f", "{{.Id}}", container]).trimmingCharacters(in: .whitespacesAndNewlines)
        let table = try sh(["docker", "network", "inspect", "docker_gwbridge", "-f", "{{range $id, $c := .Containers}}{{$id}} {{$c.IPv4Address}}\n{{end}}"])
        for line in table.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 2, f[0] == full, let ip = f[1].split(separator: "/").first {
                if reachedAt == nil { reachedAt = String(ip) }
                return String(ip)
            }
        }
        throw CommandError(description: "the coordinator's task container \(container.prefix(12)) has no address on docker_gwbridge (is it running on this host?)")
    }

    /// Stops the services' running containers (SIGTERM: an agent ships its last trace batch; SIGKILL
    /// after `grace` seconds), then scales the services to 0 so the swarm starts no replacement.
    /// A stopped task's container stays, with its files, until the stack is removed (a scaled-down
    /// task's would not: the swarm removes it).
    private func stop(_ nodes: [String], grace: Int = 5) {
        let running = nodes.compactMap { (try? runningContainer($0)) ?? nil }
        if !running.isEmpty { _ = try? sh(["docker", "stop", "-t", "\(grace)"] + running, allowFailure: true) }
        _ = try? sh(["docker", "service", "scale", "--detach"] + nodes.map { "\(service($0))=0" }, allowFailure: true)
    }

    /// Each service's task containers when the testbed went down (what `collect` reads).
    private var tasksAtDown: [String: [String]] = [:]

    public override func down(progress: (String) -> Void) {
        stop(services)
        stop(["coordinator"])
        for n in ["coordinator"] + services { tasksAtDown[n] = (try? containers(n)) ?? [] }
        let kept = tasksAtDown.values.reduce(0) { $0 + $1.count }
        progress("stopped \(services.count) node services and the coordinator (\(kept) task containers kept for collection)")
        for (n, t) in tasksAtDown.sorted(by: { $0.key < $1.key }) where t.isEmpty { progress("  no task container of \(n) on this host: its trace spool and log cannot be collected") }
    }

    public override func collect(traceDir: String, logDir: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: traceDir + "/spools", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: logDir, withIntermediateDirectories: true)
        if let c = try? container("coordinator") {
            try? sh(["docker", "cp", "\(c):/var/lib/strato/state/trace", traceDir + "/collector"])
        }
        for node in ["coordinator"] + services {
            // Oldest task first: a killed node's first life, then its replacement's. A killed task
            // whose container the swarm has removed since is read from what the kill stashed.
            let present = Array((tasksAtDown[node] ?? (try? containers(node)) ?? []).reversed())
            let gone = (stashed[node] ?? []).filter { s in !present.contains { Self.sameContainer($0, s.container) } }
            let tasks: [(container: String, stash: String?)] = gone.map { ($0.container, $0.directory) } + present.map { ($0, nil) }
            var log = ""
            for (i, task) in tasks.enumerated() {
                let spool = traceDir + "/spools/\(node)" + (i == 0 ? "" : "-task\(i + 1)")
                if tasks.count > 1 { log += "=== task \(i + 1) of \(tasks.count) (container \(task.container.prefix(12))\(task.stash == nil ? "" : ", stashed when it was killed"))\n" }
                if let stash = task.stash {
                    if node != "coordinator" { try? fm.copyItem(atPath: stash + "/trace", toPath: spool) }
                    log += (try? String(contentsOfFile: stash + "/log", encoding: .utf8)) ?? ""
                } else {
                    if node != "coordinator" { try? sh(["docker", "cp", "\(task.container):/var/lib/strato/trace", spool]) }
                    log += (try? sh(["docker", "logs", task.container], allowFailure: true)) ?? ""
                }
            }
            try log.write(toFile: logDir + "/\(node).log", atomically: true, encoding: .utf8)
        }
        try? fm.removeItem(atPath: stashRoot)
        try sh(["bash", "scripts/swarm-down", "--volumes"], environment: env, allowFailure: true)
    }

    /// Container IDs as `docker ps` gives them (12 digits) or in full.
    static func sameContainer(_ a: String, _ b: String) -> Bool { a.hasPrefix(b) || b.hasPrefix(a) }

    /// A killed task's trace spool and log, copied out at the kill: a failed task's container is
    /// the swarm's to remove (task history limits, a scale down), and one removed before teardown
    /// took its node's unshipped trace events with it.
    private var stashed: [String: [(container: String, directory: String)]] = [:]
    private var stashRoot: String { NSTemporaryDirectory() + "strato-swarm-\(project)-\(getpid())" }

    private func stash(_ node: String, container c: String) {
        let dir = stashRoot + "/\(node)-\(stashed[node, default: []].count + 1)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        if node != "coordinator" { _ = try? sh(["docker", "cp", "\(c):/var/lib/strato/trace", dir + "/trace"], allowFailure: true) }
        let log = (try? sh(["docker", "logs", c], allowFailure: true)) ?? ""
        try? log.write(toFile: dir + "/log", atomically: true, encoding: .utf8)
        stashed[node, default: []].append((c, dir))
    }

    // MARK: Faults

    /// SIGKILL to the task's container, its spool and log stashed (the swarm may remove the
    /// container before teardown), then its service scaled to 0 so the swarm does not replace it
    /// before the fault ends (the swarm's restart delay is 5 s).
    public override func kill(_ node: String) throws {
        let c = try container(node)
        try sh(["docker", "kill", c])
        stash(node, container: c)
        try sh(["docker", "service", "scale", "--detach", "\(service(node))=0"])
    }

    /// A new task of the node (its service scaled back to 1).
    public override func restart(_ node: String) throws {
        try sh(["docker", "service", "scale", "--detach", "\(service(node))=1"])
    }

    public override func crashCoordinator() throws { try kill("coordinator") }

    /// A new coordinator task; the run's operator connection keeps the address it was given, so
    /// a new task at another `docker_gwbridge` address is said at once, not left as silence.
    public override func restartCoordinator() throws {
        let before = reachedAt
        try restart("coordinator")
        for _ in 0..<120 {
            if let running = try runningContainer("coordinator"), let now = try? address(ofCoordinator: running) {
                if let before, now != before {
                    throw FaultError(description: "the coordinator's new task is at \(now) on docker_gwbridge, not \(before), where this run's operator connection points: the run cannot reach it again")
                }
                return
            }
            usleep(250_000)
        }
        throw FaultError(description: "no coordinator task running on this host 30 s after scaling \(service("coordinator")) back to 1")
    }

    /// In the node's own transport: a swarm task cannot be disconnected from its overlay network.
    public override func partition(_ node: String, on: Bool) throws {
        if on { partitioned.insert(node) } else { partitioned.remove(node) }
        try writeControl(node, currentLink(node))
    }
}
