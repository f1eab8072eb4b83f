import Foundation

/// Starts processes detached from the caller (own session, stdin from /dev/null, stdout and stderr
/// to a log file), so a testbed outlives the `strato testbed up` that started it.
public enum ProcessLauncher {
    public struct LaunchError: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// Path of the running `strato` executable.
    public static var selfExecutable: String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        return n > 0 ? String(cString: buf) : CommandLine.arguments[0]
    }

    /// Spawns `executable` with `arguments`; returns its pid.
    public static func spawn(_ executable: String, _ arguments: [String], logFile: String,
                             environment: [String: String] = [:], newSession: Bool = true) throws -> pid_t {
        try FileManager.default.createDirectory(atPath: (logFile as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logFile, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // Reset signal dispositions the parent may have changed (e.g. ignored SIGTERM).
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var flags = Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK)
        // POSIX_SPAWN_SETSID (glibc 2.26+) is only declared under _GNU_SOURCE, so Swift does not see it.
        if newSession { flags |= 0x80 }
        posix_spawnattr_setflags(&attr, flags)

        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attr, argv, envp)
        guard rc == 0 else {
            throw LaunchError(description: "cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        return pid
    }

    public static func isAlive(_ pid: pid_t) -> Bool {
        guard pid > 0 else { return false }
        // A zombie child still answers kill(0); reap it first if it is ours.
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { return false }
        if kill(pid, 0) != 0 { return false }
        // Not our child: read its state; 'Z' is a zombie waiting for its parent.
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")") {
            let rest = stat[stat.index(close, offsetBy: 2)...]
            if rest.first == "Z" { return false }
        }
        return true
    }

    /// Sends SIGTERM, waits up to `grace` seconds, then SIGKILL. Returns true if it exited on TERM.
    @discardableResult
    public static func terminate(_ pid: pid_t, grace: Double = 5) -> Bool {
        guard isAlive(pid) else { return true }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while Date() < deadline {
            if !isAlive(pid) { return true }
            usleep(20_000)
        }
        kill(pid, SIGKILL)
        for _ in 0..<100 where isAlive(pid) { usleep(10_000) }
        return false
    }
}
