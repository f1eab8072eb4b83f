import Cluster
import Foundation

/// Experiments on local processes (the default): the testbed of `strato testbed up`, with tracing on.
public final class LocalPlatform: ExperimentPlatform {
    public let name = "local"
    public let runDirectory: String
    private var backend: LocalFaultBackend?

    public let executable: String

    public init(runDirectory: String = Testbed.defaultRunDirectory, executable: String = ProcessLauncher.selfExecutable) {
        self.runDirectory = runDirectory
        self.executable = executable
    }

    public var faults: FaultBackend {
        guard let b = backend else { fatalError("the local platform has no testbed before up()") }
        return b
    }

    public func up(_ spec: ExperimentSpec, progress: (String) -> Void) throws -> OperatorClient {
        if let old = Testbed.load(runDirectory: runDirectory), !old.liveProcesses.isEmpty {
            throw ProcessLauncher.LaunchError(description: "a testbed is already running from \(runDirectory); run `strato testbed down` first")
        }
        // A fresh state and trace for every run: results must hold only this run.
        try? FileManager.default.removeItem(atPath: runDirectory)
        let bed = try Testbed.up(topology: spec.topology, runDirectory: runDirectory, executable: executable, traceHeartbeatSample: spec.heartbeatSample, progress: progress)
        backend = LocalFaultBackend(testbed: bed, topology: spec.topology)
        return try OperatorClient(endpoint: bed.endpoint, keysDirectory: bed.keysDirectory)
    }

    public func down(progress: (String) -> Void) {
        backend?.currentTestbed.down(progress: progress)
    }

    public func collect(traceDir: String, logDir: String) throws {
        guard let bed = backend?.currentTestbed else { return }
        let fm = FileManager.default
        try fm.createDirectory(atPath: traceDir, withIntermediateDirectories: true)
        for (from, to) in [(bed.runDirectory + "/state/trace", traceDir + "/collector"), (bed.runDirectory + "/trace", traceDir + "/spools")] {
            try? fm.removeItem(atPath: to)
            if fm.fileExists(atPath: from) { try fm.copyItem(atPath: from, toPath: to) }
        }
        try? fm.removeItem(atPath: logDir)
        if fm.fileExists(atPath: bed.runDirectory + "/logs") { try fm.copyItem(atPath: bed.runDirectory + "/logs", toPath: logDir) }
    }
}
