import ArgumentParser
import Cluster
import Coordinator
import Features
import Foundation
import Logging
import Experiments
import Scheduling

struct CoordinatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator", abstract: "Run the coordinator: membership, failure detection and durable state.")

    @Option(help: "ZeroMQ endpoint to bind (ROUTER).") var endpoint = "tcp://127.0.0.1:7700"
    @Option(name: .customLong("state-dir"), help: "Directory for the durable state (SQLite with WAL).") var stateDir = ".strato/state"
    @Option(help: "Key directory from `strato keys generate`; without it the coordinator runs open.") var keys: String?
    @Option(name: .customLong("heartbeat-ms"), help: "Heartbeat interval agents are told to use.") var heartbeatMs: UInt32 = 200
    @Option(name: .customLong("suspect-after-ms"), help: "Silence after which a node is suspect.") var suspectAfterMs: Int64 = 1000
    @Option(name: .customLong("dead-after-ms"), help: "Silence after which a node is dead.") var deadAfterMs: Int64 = 2000
    @Option(name: .customLong("max-frame-bytes"), help: "Largest control frame accepted.") var maxFrameBytes = 1 << 20
    @Option(help: "Scheduling policy for offline jobs: \(Policies.names.joined(separator: ", ")).") var policy = "hybrid"
    @Option(name: .customLong("time-scale"), help: "Trace seconds per wall second for job execution (e.g. 1000 replays 24 h in 86 s).") var timeScale = 1.0
    @Option(help: "Seed data to fill an empty knowledge base from (default: data/ of the repository).") var data: String?
    @Flag(help: "Record this process's trace events into the collector (STATE/trace/).") var trace = false
    @Option(name: .customLong("kv-bytes-scale"), help: "Real bytes replicas hold per KV block, as a fraction of its real size (emulation; 0: none).")
    var kvBytesScale = SchedulingController.defaultKVBytesScale
    @Option(name: .customLong("trace-sample"), help: "Trace 1 in N heartbeat exchanges (other messages always).") var traceSample: UInt64 = 5
    @Option(name: .customLong("migration-policy"), help: "When running inference requests move between replicas: \(MigrationPolicies.names.joined(separator: ", ")).")
    var migrationPolicy = "none"
    @Option(name: .customLong("migration-method"), help: "How they move: live (copy while decoding, then a short final stage), blocking (stop, copy, resume) or recompute (stop, prefill again).")
    var migrationMethod = "live"
    @Flag(name: .customLong("migration-staging"), help: "A migration whose destination has no room stages the request's KV on a memory host until it has (drains then need not wait for room).")
    var migrationStaging = false
    @Option(name: .customLong("migration-downtime-ms"), help: "The stall (trace milliseconds) a live migration's final stage may add.") var migrationDowntimeMs = 20.0
    @Option(name: .customLong("migration-interval-ms"), help: "Wall milliseconds between migration-policy rounds.") var migrationIntervalMs = 250.0
    @Option(name: .customLong("migration-max-concurrent"), help: "Migrations in flight at once.") var migrationMaxConcurrent = 4
    @Option(name: .customLong("kv-link"), help: "Emulated link KV caches cross between GPU nodes, for their real size (25gbit, 100gbit, 10GB/s; 0: none): a copy of scaled bytes takes the real bytes' time on it.")
    var kvLink = "25gbit"
    @Option(name: .customLong("offload-policy"), help: "What lives where in the memory hosts' tiers: \(OffloadPolicies.names.joined(separator: ", ")).")
    var offloadPolicy = "tiered"
    @Option(name: .customLong("tier-link"), help: "Emulated link between GPU agents and memory hosts, for KV chunks' real size (100gbit, 25GB/s).")
    var tierLink = "100gbit"
    @Option(name: .customLong("render-policy"), help: "Where players render: \(RenderPolicies.names.joined(separator: ", ")).")
    var renderPolicy = "adaptive"
    @Option(name: .customLong("render-script"), help: "scripted render policy: a switch 'AT_SECONDS PLAYER PLACE' (repeatable; PLAYER an id or *, PLACE local, edge, cloud or a site id).")
    var renderScript: [String] = []

    func validate() throws {
        guard Policies.named(policy) != nil else { throw ValidationError("--policy '\(policy)' is unknown (known: \(Policies.names.joined(separator: ", ")))") }
        guard timeScale > 0 else { throw ValidationError("--time-scale must be positive") }
        guard MigrationPolicies.named(migrationPolicy) != nil else {
            throw ValidationError("--migration-policy '\(migrationPolicy)' is unknown (known: \(MigrationPolicies.names.joined(separator: ", ")))")
        }
        guard OffloadPolicies.named(offloadPolicy) != nil else {
            throw ValidationError("--offload-policy '\(offloadPolicy)' is unknown (known: \(OffloadPolicies.names.joined(separator: ", ")))")
        }
        do { _ = try RenderPolicies.named(renderPolicy, script: renderScript) } catch { throw ValidationError("--render-policy: \(error)") }
        do { _ = try NetworkConditions.parseBandwidth(tierLink) } catch { throw ValidationError("--tier-link: \(error)") }
        if kvLink != "0" { do { _ = try NetworkConditions.parseBandwidth(kvLink) } catch { throw ValidationError("--kv-link: \(error)") } }
        guard MigrationMethod(rawValue: migrationMethod) != nil else { throw ValidationError("--migration-method '\(migrationMethod)' must be live, blocking or recompute") }
        guard migrationDowntimeMs > 0, migrationIntervalMs > 0, migrationMaxConcurrent >= 1 else {
            throw ValidationError("--migration-downtime-ms and --migration-interval-ms must be positive, --migration-max-concurrent at least 1")
        }
        guard kvBytesScale >= 0, kvBytesScale <= 1 else { throw ValidationError("--kv-bytes-scale \(kvBytesScale) must be within 0 … 1") }
        guard suspectAfterMs > 0, deadAfterMs > suspectAfterMs else {
            throw ValidationError("--dead-after-ms (\(deadAfterMs)) must exceed --suspect-after-ms (\(suspectAfterMs)), both positive")
        }
        guard heartbeatMs > 0, Int64(heartbeatMs) < suspectAfterMs else {
            throw ValidationError("--heartbeat-ms (\(heartbeatMs)) must be positive and below --suspect-after-ms (\(suspectAfterMs))")
        }
    }

    func run() throws {
        Strato.bootstrapLogging()
        var config = CoordinatorConfig(stateDirectory: stateDir)
        config.endpoint = endpoint
        config.keysDirectory = keys
        config.heartbeatIntervalMs = heartbeatMs
        config.detector = FailureDetectorConfig(suspectAfterNanos: .millis(suspectAfterMs), deadAfterNanos: .millis(deadAfterMs))
        config.maxFrameBytes = maxFrameBytes
        config.policy = policy
        config.timeScale = timeScale
        config.dataDirectory = DataPaths.dataDirectory(data)
        // Containers switch tracing on through the environment (compose/docker-compose.yml).
        let env = ProcessInfo.processInfo.environment
        config.trace = trace || env["STRATO_TRACE"] == "1"
        config.traceHeartbeatSample = env["STRATO_TRACE_SAMPLE"].flatMap(UInt64.init) ?? traceSample
        // The coordinator's composition root: one line per feature's controller.
        let scheduling = SchedulingController(policy: policy, kvBytesScale: kvBytesScale)
        scheduling.weightLinkBytesPerSecond = (try NetworkConditions.parseBandwidth(tierLink)) ?? 0
        var migration = MigrationSettings()
        migration.policy = migrationPolicy
        migration.method = MigrationMethod(rawValue: migrationMethod)!
        migration.downtimeBudget = migrationDowntimeMs / 1000
        migration.interval = migrationIntervalMs / 1000
        migration.maxConcurrent = migrationMaxConcurrent
        migration.staging = migrationStaging
        migration.kvLinkBytesPerSecond = kvLink == "0" ? 0 : (try NetworkConditions.parseBandwidth(kvLink) ?? 0)
        let server = CoordinatorServer(config: config, features: [
            scheduling,                             // features "jobs" and "inference"
            try MigrationController(scheduling: scheduling, settings: migration),   // feature "migration": requests move with their KV
            DataPlaneController(),                  // feature "dataplane": peer sockets, probes
            TiersController(policy: offloadPolicy, linkBytesPerSecond: (try NetworkConditions.parseBandwidth(tierLink)) ?? 0, scheduling: scheduling),   // feature "tiers": memory hosts' block stores, KV prefixes
            GameController(policy: try RenderPolicies.named(renderPolicy, script: renderScript)),   // feature "game": where each player renders
        ])
        SignalTrap.onHangUp { server.requestKeyReload() }   // SIGHUP: read authorized_keys again
        try Lifecycle.run([LoopService(description: "coordinator", body: { try server.run() }, requestStop: { server.stop() })],
                          logger: Logger(label: "strato.lifecycle"))
    }
}
