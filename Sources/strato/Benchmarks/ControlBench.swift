import Cluster
import Experiments
import Foundation
import Protocol
import Wire

/// `strato bench control`: a coordinator process and one process of N virtual agents heartbeating
/// at the default rate; prints heartbeats handled per second, the coordinator's CPU share and the
/// p99 time from heartbeat sent to state updated.
public enum ControlBench {
    public struct Result {
        public var agents: Int
        public var heartbeatMs: Int
        public var heartbeatsPerSecond: Double
        public var expectedPerSecond: Double
        public var coordinatorCPUShare: Double
        public var agentCPUShare: Double
        public var p50Ms: Double
        public var p99Ms: Double
        public var aliveAtEnd: Int
        public var registerSeconds: Double

        public var table: String {
            let met = heartbeatsPerSecond >= 0.95 * expectedPerSecond && aliveAtEnd == agents
            return """

            control-plane benchmark: \(agents) virtual agents, heartbeat every \(heartbeatMs) ms
            all registered in            \(String(format: "%8.2f s", registerSeconds))
            heartbeats handled           \(String(format: "%8.0f /s", heartbeatsPerSecond)) (expected \(String(format: "%.0f", expectedPerSecond)) /s, ratio \(String(format: "%.3f", heartbeatsPerSecond / expectedPerSecond)))
            coordinator CPU              \(String(format: "%8.1f %%", coordinatorCPUShare * 100)) of one core
            agent process CPU            \(String(format: "%8.1f %%", agentCPUShare * 100)) of one core
            heartbeat sent → state p50   \(String(format: "%8.2f ms", p50Ms))
            heartbeat sent → state p99   \(String(format: "%8.2f ms", p99Ms))
            alive at end                 \(String(format: "%8d", aliveAtEnd)) of \(agents)
            target (\(agents) agents at the default rate, none suspected): \(met ? "met" : "NOT met")
            """
        }
    }

    public static func run(agents: Int, seconds: Double, heartbeatMs: Int, progress: (String) -> Void) throws -> Result {
        let dir = NSTemporaryDirectory() + "strato-bench-control-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let endpoint = "ipc://\(dir)/control.sock"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let exe = ProcessLauncher.selfExecutable
        let coordinator = try ProcessLauncher.spawn(exe, ["coordinator", "--endpoint", endpoint, "--state-dir", dir + "/state",
                                                          "--heartbeat-ms", "\(heartbeatMs)"],
                                                    logFile: dir + "/coordinator.log", newSession: false)
        var agentPid: pid_t = 0
        defer {
            if agentPid > 0 { ProcessLauncher.terminate(agentPid, grace: 3) }
            ProcessLauncher.terminate(coordinator, grace: 3)
        }
        let client = try OperatorClient(endpoint: endpoint)
        defer { client.close() }
        var up = false
        for _ in 0..<100 where !up { up = (try? client.status(timeoutMs: 200)) != nil }
        guard up else { throw ProcessLauncher.LaunchError(description: "coordinator did not start: " + Testbed.tail(dir + "/coordinator.log")) }
        progress("coordinator up (pid \(coordinator)); starting \(agents) virtual agents …")
        agentPid = try ProcessLauncher.spawn(exe, ["agent", "gpu", "--id", "bench", "--virtual", "\(agents)", "--gpu-model", "A100-80GB",
                                                   "--gpus", "8", "--endpoint", endpoint, "--heartbeat-ms", "\(heartbeatMs)"],
                                             logFile: dir + "/agents.log", newSession: false)
        let start = Date()
        var alive = 0
        while alive < agents {
            guard Date().timeIntervalSince(start) < 60 else {
                throw ProcessLauncher.LaunchError(description: "only \(alive)/\(agents) agents alive after 60 s")
            }
            usleep(500_000)
            alive = (try? client.status(timeoutMs: 2000))?.nodes.filter { $0.state == .alive }.count ?? alive
            progress(String(format: "  %5.1f s: %d/%d registered", Date().timeIntervalSince(start), alive, agents))
        }
        let registerSeconds = Date().timeIntervalSince(start)
        // Let the start-up burst settle before measuring.
        usleep(2_000_000)
        let s0 = try client.status(timeoutMs: 3000)
        let c0 = ProcessStats.cpuSeconds(pid: coordinator) ?? 0, a0 = ProcessStats.cpuSeconds(pid: agentPid) ?? 0
        let t0 = Date()
        var elapsed = 0.0
        while elapsed < seconds {
            usleep(useconds_t(min(1.0, seconds - elapsed) * 1e6))
            elapsed = Date().timeIntervalSince(t0)
            progress(String(format: "  measuring %4.1f/%.0f s", elapsed, seconds))
        }
        let s1 = try client.status(timeoutMs: 3000)
        let dt = Date().timeIntervalSince(t0)
        let c1 = ProcessStats.cpuSeconds(pid: coordinator) ?? c0, a1 = ProcessStats.cpuSeconds(pid: agentPid) ?? a0
        return Result(agents: agents, heartbeatMs: heartbeatMs,
                      heartbeatsPerSecond: Double(s1.control.heartbeatsHandled - s0.control.heartbeatsHandled) / dt,
                      expectedPerSecond: Double(agents) * 1000 / Double(heartbeatMs),
                      coordinatorCPUShare: (c1 - c0) / dt, agentCPUShare: (a1 - a0) / dt,
                      p50Ms: s1.control.heartbeatLatencyP50Ms, p99Ms: s1.control.heartbeatLatencyP99Ms,
                      aliveAtEnd: s1.nodes.filter { $0.state == .alive }.count, registerSeconds: registerSeconds)
    }
}
