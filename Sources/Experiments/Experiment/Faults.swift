import Cluster
import Features
import Foundation
import Protocol

public struct FaultError: Error, CustomStringConvertible { public let description: String }

/// How faults reach a testbed: local processes (signals, control files) or containers (docker).
/// Each start has an undo; the injector pairs them.
public protocol FaultBackend: AnyObject {
    var name: String { get }
    func kill(_ node: String) throws
    func restart(_ node: String) throws
    func pause(_ node: String) throws
    func resume(_ node: String) throws
    /// Cuts the node off from the rest (`on: false` heals).
    func partition(_ node: String, on: Bool) throws
    /// Added latency and/or a bandwidth cap on the node's link (nil, nil restores it).
    func degradeLink(_ node: String, latencyMs: Double?, bandwidthBytesPerSecond: Double?) throws
    /// Lets the node's process use only `cpu` of one core (nil restores it).
    func throttleCPU(_ node: String, cpu: Double?) throws
    func crashCoordinator() throws
    func restartCoordinator() throws
}

/// Applies faults as start/stop pairs through a backend and records each edge as a trace event
/// (`category: fault`, `edge: start|end`) so the merged trace shows every fault as a window.
public final class FaultInjector {
    public struct Active: Codable {
        public var id: String
        public var fault: ExperimentSpec.Fault
        public var startedAt: Date
    }

    public let backend: FaultBackend
    public private(set) var active: [Active] = []
    public private(set) var applied = 0
    public private(set) var healed = 0
    public private(set) var log: [String] = []
    private var nextID = 0

    /// The coordinator, for faults that go through it (a drain is an operator command).
    public var operatorClient: OperatorClient?

    public init(backend: FaultBackend, operatorClient: OperatorClient? = nil) { self.backend = backend; self.operatorClient = operatorClient }

    private func drain(_ nodes: [String], _ on: Bool) throws {
        guard let c = operatorClient else { throw FaultError(description: "a drain goes through the coordinator, and this injector has no connection to it") }
        for n in nodes {
            var d = Stratolab_V1_Drain(); d.drain = on
            var cmd = Command(); cmd.drain = d
            let r = try c.command(node: n, cmd)
            guard r.accepted else { throw FaultError(description: "the coordinator refused to \(on ? "drain" : "undrain") \(n): \(r.detail)") }
        }
    }

    /// A fill_disk fault is the tiers feature's request through the coordinator.
    private func fillDisk(_ nodes: [String], _ full: Bool) throws {
        guard let c = operatorClient else { throw FaultError(description: "fill_disk goes through the coordinator, and this injector has no connection to it") }
        for n in nodes {
            do { _ = try c.tierDiskFault(node: n, full: full) } catch {
                throw FaultError(description: "the coordinator refused to \(full ? "fill" : "free") the disk of \(n): \(error)")
            }
        }
    }

    @discardableResult
    public func start(_ f: ExperimentSpec.Fault, id: String? = nil) throws -> String {
        nextID += 1
        let fid = id ?? "f\(nextID)"
        record(fid, f, edge: "start")
        switch f.action {
        case .kill: for n in f.nodes { try backend.kill(n) }
        case .pause: for n in f.nodes { try backend.pause(n) }
        case .partition: for n in f.nodes { try backend.partition(n, on: true) }
        case .slow:
            for n in f.nodes {
                if f.latencyMs != nil || f.bandwidth != nil {
                    try backend.degradeLink(n, latencyMs: f.latencyMs, bandwidthBytesPerSecond: f.bandwidth.flatMap(ExperimentSpec.bandwidthBytesPerSecond))
                }
                if let c = f.cpu { try backend.throttleCPU(n, cpu: c) }
            }
        case .crashCoordinator: try backend.crashCoordinator()
        case .drain: try drain(f.nodes, true)
        case .fillDisk: try fillDisk(f.nodes, true)
        }
        active.append(Active(id: fid, fault: f, startedAt: Date()))
        applied += 1
        log.append("\(stamp()) start \(fid): \(f.describe)")
        return fid
    }

    public func stop(_ id: String) throws {
        guard let i = active.firstIndex(where: { $0.id == id }) else { return }
        let a = active.remove(at: i)
        let f = a.fault
        switch f.action {
        case .kill: for n in f.nodes { try backend.restart(n) }
        case .pause: for n in f.nodes { try backend.resume(n) }
        case .partition: for n in f.nodes { try backend.partition(n, on: false) }
        case .slow:
            for n in f.nodes {
                if f.cpu != nil { try backend.throttleCPU(n, cpu: nil) }
                if f.latencyMs != nil || f.bandwidth != nil { try backend.degradeLink(n, latencyMs: nil, bandwidthBytesPerSecond: nil) }
            }
        case .crashCoordinator: try backend.restartCoordinator()
        case .drain: try drain(f.nodes, false)
        case .fillDisk: try fillDisk(f.nodes, false)
        }
        healed += 1
        record(id, f, edge: "end")
        log.append("\(stamp()) \(f.action.healName) \(id): \(f.describe)")
    }

    /// Takes over a window another injector started (e.g. `strato fault heal` after `inject`).
    public func adopt(_ a: Active) { active.append(a) }

    /// The final heal: ends every window still open, continuing past errors (and reporting them).
    public func healAll() -> [String] {
        var errors: [String] = []
        for a in active.reversed() {
            do { try stop(a.id) } catch { errors.append("could not \(a.fault.action.healName) \(a.fault.describe): \(error)") }
        }
        return errors
    }

    private func record(_ id: String, _ f: ExperimentSpec.Fault, edge: String) {
        var args = ["fault_id": id, "edge": edge, "action": f.action.rawValue,
                    "target": f.nodes.isEmpty ? "coordinator" : f.nodes.joined(separator: ","), "backend": backend.name]
        args["detail"] = f.describe
        Tracer.shared.instant("\(f.action.rawValue) \(edge)", category: "fault", track: "faults", args: args)
    }

    private let t0 = Date()
    private func stamp() -> String { String(format: "%6.1f s", Date().timeIntervalSince(t0)) }
}

/// Faults on a testbed of local processes: SIGKILL and a fresh start with the same arguments,
/// SIGSTOP/SIGCONT, CPU throttling by a SIGSTOP/SIGCONT duty cycle, and partitions, latency and
/// bandwidth through each agent's network control file (`RUN/net/<node>.json`, read by its
/// transport, since this kernel has no netem).
public final class LocalFaultBackend: FaultBackend {
    public let name = "local"
    public private(set) var testbed: Testbed
    private var throttles: [String: CPUThrottle] = [:]
    private var linkState: [String: (partitioned: Bool, latencyMs: Double?, bandwidth: Double?)] = [:]

    /// Each node's configured link (the topology's `network:` for its site).
    public let baseConditions: [String: NetworkConditions]

    public init(testbed: Testbed, topology: Topology? = nil) {
        self.testbed = testbed
        var base: [String: NetworkConditions] = [:]
        for n in topology?.nodes ?? [] { base[n.id] = topology?.network[n.siteName] }
        baseConditions = base
    }

    /// The record on disk is the truth: a live `strato fault inject` may have restarted a process.
    private func refresh() {
        if let fresh = Testbed.load(runDirectory: testbed.runDirectory) { testbed = fresh }
    }

    private func pid(_ node: String) throws -> pid_t {
        refresh()
        guard let p = testbed.process(named: node) else { throw ProcessLauncher.LaunchError(description: "no process for node '\(node)' in this testbed") }
        return p.pid
    }

    public func kill(_ node: String) throws {
        throttles.removeValue(forKey: node)?.stop()
        let p = try pid(node)
        _ = Glibc.kill(p, SIGCONT)   // a paused process must die too
        _ = Glibc.kill(p, SIGKILL)
        for _ in 0..<200 where ProcessLauncher.isAlive(p) { usleep(10_000) }
    }

    public func restart(_ node: String) throws { refresh(); try testbed.restart(node) }
    public func pause(_ node: String) throws { _ = Glibc.kill(try pid(node), SIGSTOP) }
    public func resume(_ node: String) throws { _ = Glibc.kill(try pid(node), SIGCONT) }

    /// The current record (for teardown after restarts).
    public var currentTestbed: Testbed { refresh(); return testbed }

    public func partition(_ node: String, on: Bool) throws {
        var s = linkState[node] ?? (false, nil, nil)
        s.partitioned = on
        linkState[node] = s
        try writeControl(node)
    }

    public func degradeLink(_ node: String, latencyMs: Double?, bandwidthBytesPerSecond: Double?) throws {
        var s = linkState[node] ?? (false, nil, nil)
        s.latencyMs = latencyMs
        s.bandwidth = bandwidthBytesPerSecond
        linkState[node] = s
        try writeControl(node)
    }

    /// The control file replaces the node's configured link while it exists, so it holds the
    /// configured conditions with the faults on top (added delay, the lower bandwidth, a
    /// partition); no fault left: the file goes and the agent returns to its configured link.
    private func writeControl(_ node: String) throws {
        let dir = testbed.runDirectory + "/net"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = "\(dir)/\(node).json"
        guard let s = linkState[node], s.partitioned || s.latencyMs != nil || s.bandwidth != nil else {
            try? FileManager.default.removeItem(atPath: path)
            return
        }
        var c = baseConditions[node] ?? .none
        c.partitioned = s.partitioned
        c.delayMs += s.latencyMs ?? 0
        if let b = s.bandwidth { c.bandwidthBytesPerSecond = min(b, c.bandwidthBytesPerSecond ?? .infinity) }
        let data = try JSONEncoder().encode(c)
        // Write then rename, so the agent never reads half a file.
        try data.write(to: URL(fileURLWithPath: path + ".tmp"))
        _ = rename(path + ".tmp", path)
    }

    public func throttleCPU(_ node: String, cpu: Double?) throws {
        throttles.removeValue(forKey: node)?.stop()
        if let c = cpu {
            let t = CPUThrottle(pid: try pid(node), share: c)
            t.start()
            throttles[node] = t
        }
    }

    public func crashCoordinator() throws {
        let p = try pid("coordinator")
        _ = Glibc.kill(p, SIGKILL)
        for _ in 0..<200 where ProcessLauncher.isAlive(p) { usleep(10_000) }
    }

    public func restartCoordinator() throws { refresh(); try testbed.restart("coordinator") }

    deinit { for t in throttles.values { t.stop() } }
}

/// Holds a process to `share` of one CPU with a 100 ms SIGSTOP/SIGCONT duty cycle (what cgroup
/// CPU quotas do, for processes outside a container).
final class CPUThrottle: @unchecked Sendable {
    let pid: pid_t
    let share: Double
    private let lock = NSLock()
    private var running = true
    private var thread: Thread?

    init(pid: pid_t, share: Double) { self.pid = pid; self.share = share }

    func start() {
        let t = Thread { [self] in
            let period = 100_000.0
            while isRunning {
                _ = Glibc.kill(pid, SIGCONT)
                usleep(UInt32(period * share))
                guard isRunning else { break }
                _ = Glibc.kill(pid, SIGSTOP)
                usleep(UInt32(period * (1 - share)))
            }
            _ = Glibc.kill(pid, SIGCONT)
        }
        thread = t
        t.start()
    }

    private var isRunning: Bool { lock.lock(); defer { lock.unlock() }; return running }

    func stop() {
        lock.lock(); running = false; lock.unlock()
        // The loop sends the final SIGCONT; send one here too so the process never stays stopped.
        usleep(110_000)
        _ = Glibc.kill(pid, SIGCONT)
    }
}
