import ArgumentParser
import Cluster
import DataPlane
import Foundation
import Features
import GPUAgent
import Logging
import Experiments
import Scheduling
import MemoryAgent
import Protocol
import RenderAgent
import Wire

struct AgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent", abstract: "Run an agent that registers with the coordinator and heartbeats.",
        subcommands: [GPU.self, Memory.self, Render.self])

    struct Common: ParsableArguments {
        @Option(help: "Node id (with --virtual N, ids are ID-0 … ID-(N-1)).") var id: String
        @Option(help: "Site kind: cloud, edge or device.") var site = "cloud"
        @Option(name: .customLong("site-name"), help: "Site name (defaults to the site kind).") var siteName: String?
        @Option(name: .customLong("label"), help: "A label KEY=VALUE (repeatable).") var labels: [String] = []
        @Option(help: "Coordinator endpoint.") var endpoint = "tcp://127.0.0.1:7700"
        @Option(help: "Key directory from `strato keys generate` (CURVE on).") var keys: String?
        @Option(name: .customLong("client-key"), help: "Key pair file to use instead of KEYS/agent.key.") var clientKey: String?
        @Option(name: .customLong("heartbeat-ms"), help: "Heartbeat interval until the coordinator says otherwise.") var heartbeatMs: UInt32 = 200
        @Option(name: .customLong("coordinator-timeout-ms"), help: "Silence after which the agent registers again.") var coordinatorTimeoutMs: Int64 = 2000
        @Option(help: "Host this many virtual nodes in this process (scale tests).") var virtual = 1
        @Option(name: .customLong("trace-dir"), help: "Record trace events, spool them here and ship them to the coordinator's collector.") var traceDir: String?
        @Option(name: .customLong("trace-sample"), help: "Trace 1 in N heartbeat exchanges (other messages always).") var traceSample: UInt64 = 5
        @Option(name: .customLong("net-delay-ms"), help: "Emulated one-way delay to the coordinator, each direction (20, 20ms, 1.5s).") var netDelay: String?
        @Option(name: .customLong("net-jitter-ms"), help: "Emulated jitter: ± this much, uniform, without reordering.") var netJitter: String?
        @Option(name: .customLong("net-loss"), help: "Emulated loss, each direction: a fraction 0…1 or a percentage (0.01, 1%).") var netLoss: String?
        @Option(name: .customLong("net-bandwidth"), help: "Emulated bandwidth, each direction: 100mbit, 1gbit, 10MB/s, … (default unlimited).") var netBandwidth: String?
        @Option(name: .customLong("net-control"), help: "JSON file of network conditions that replaces the --net-* ones while it exists (re-read when it changes).") var netControl: String?
        @Option(name: .customLong("data-endpoint"), help: "Where this node's data-plane peer socket binds (port 0: any free one), or none. Default tcp://127.0.0.1:0; none with --virtual.") var dataEndpoint: String?
        @Option(name: .customLong("data-advertise-host"), help: "Host peers use to reach the data plane (e.g. the container's name when it binds 0.0.0.0).") var dataAdvertiseHost: String?

        func validate() throws {
            guard SiteKind(name: site) != nil else { throw ValidationError("--site '\(site)' must be cloud, edge or device") }
            guard (1...100_000).contains(virtual) else { throw ValidationError("--virtual \(virtual) must be between 1 and 100000") }
            for l in labels where !l.contains("=") { throw ValidationError("--label '\(l)' must be KEY=VALUE") }
            _ = try networkConditions()
            if let f = netControl, f.isEmpty || f.hasSuffix("/") { throw ValidationError("--net-control '\(f)' must name a file") }
        }

        /// The --net-* options as conditions; errors name the option and the value.
        func networkConditions() throws -> NetworkConditions {
            do {
                var c = NetworkConditions.none
                if let d = netDelay { c.delayMs = try NetworkConditions.parseDuration(d, what: "--net-delay-ms") }
                if let j = netJitter { c.jitterMs = try NetworkConditions.parseDuration(j, what: "--net-jitter-ms") }
                if let l = netLoss { c.loss = try NetworkConditions.parseLoss(l) }
                if let b = netBandwidth { c.bandwidthBytesPerSecond = try NetworkConditions.parseBandwidth(b) }
                try c.validate()
                return c
            } catch let e as NetworkConditions.ParseError {
                throw ValidationError(e.description.hasPrefix("--") ? e.description : "--net-" + e.description)
            }
        }

        func identities() -> [AgentIdentity] {
            var labelMap: [String: String] = [:]
            for l in labels {
                let p = l.split(separator: "=", maxSplits: 1).map(String.init)
                labelMap[p[0]] = p.count > 1 ? p[1] : ""
            }
            let kind = SiteKind(name: site)!
            let ids = virtual > 1 ? (0..<virtual).map { "\(id)-\($0)" } : [id]
            return ids.map { AgentIdentity(nodeID: $0, siteName: siteName ?? site, siteKind: kind, labels: labelMap) }
        }

        var sessionConfig: AgentSessionConfig {
            var c = AgentSessionConfig()
            c.endpoint = endpoint
            c.keysDirectory = keys
            c.clientKeyFile = clientKey
            c.heartbeatIntervalMs = heartbeatMs
            c.coordinatorSilenceMs = coordinatorTimeoutMs
            c.network = (try? networkConditions()) ?? .none   // validate() has refused bad ones
            c.networkControlFile = netControl
            return c
        }

        /// Feature "dataplane" for a single-node agent: its peer socket (CURVE with this node's key
        /// when keys are on, admitting the testbed's authorised keys) through the node's emulated link.
        func dataPlaneHandler(nodeID: String) throws -> DataPlaneHandler? {
            let endpoint = dataEndpoint ?? (virtual > 1 ? "none" : "tcp://127.0.0.1:0")
            guard endpoint != "none" else { return nil }
            guard virtual == 1 else { throw ValidationError("--data-endpoint: a data plane serves one node; use none with --virtual") }
            do { return DataPlaneHandler(plane: try DataPlane(config: try dataPlaneConfig(nodeID: nodeID, endpoint: endpoint))) } catch let e as ValidationError { throw e } catch {
                throw ValidationError("--data-endpoint \(endpoint): could not bind the data plane: \(error)")
            }
        }

        /// The data plane's configuration for this agent process (keys, emulated network).
        func dataPlaneConfig(nodeID: String, endpoint: String, network: NetworkConditions? = nil) throws -> DataPlaneConfig {
            var c = DataPlaneConfig(nodeID: nodeID)
            c.bindEndpoint = endpoint
            c.advertiseHost = dataAdvertiseHost
            c.network = network ?? (try? networkConditions()) ?? .none
            c.networkControlFile = netControl
            if let dir = keys {
                let kd = KeyDirectory(path: dir)
                c.keys = try clientKey.map(KeyDirectory.readPair) ?? kd.agentKeys()
                c.authorizedKeys = try kd.authorizedKeys(role: .agent)   // peers are agents; operator and driver keys are not
                c.peerKeys = try kd.authorizedEntries().filter { $0.value.role == .agent }   // and name only the nodes their keys may claim
                c.authorizedKeysFile = kd.file("authorized_keys")
            }
            return c
        }

        /// Runs the session for the nodes `make` builds; a single node gets its data plane, which
        /// `make` may hand to features that move bulk bytes.
        func run(_ make: (AgentIdentity, DataPlaneHandler?) throws -> AgentBehavior) throws {
            Strato.bootstrapLogging()
            let ids = identities()
            let plane = try dataPlaneHandler(nodeID: ids[0].nodeID)
            try runNodes(try ids.map { ($0, try make($0, plane)) }, extraHandlers: plane.map { [$0] } ?? [])
        }

        /// Whether any --net-* option was given (they win over a player's network class).
        var hasNetworkOptions: Bool { netDelay != nil || netJitter != nil || netLoss != nil || netBandwidth != nil }

        /// Runs the session for these nodes, with `extraHandlers` on every node (a shared data plane),
        /// on `network` instead of the --net-* conditions when given.
        func runNodes(_ nodes: [(AgentIdentity, AgentBehavior)], extraHandlers: [FeatureHandler], network: NetworkConditions? = nil) throws {
            let env = ProcessInfo.processInfo.environment
            if let dir = traceDir ?? env["STRATO_TRACE_DIR"].flatMap({ $0.isEmpty ? nil : $0 }) {
                try Tracer.shared.enable(process: id, spoolDirectory: dir, heartbeatSample: env["STRATO_TRACE_SAMPLE"].flatMap(UInt64.init) ?? traceSample)
                Tracer.shared.instant("agent start", category: "lifecycle", track: "control",
                                      args: ["kind": nodes[0].1.kind.name, "nodes": "\(nodes.count)", "pid": "\(getpid())"])
            }
            var config = sessionConfig
            if let network { config.network = network }
            let session = AgentSession(config: config, nodes: nodes, extraHandlers: extraHandlers,
                                       logger: Logger(label: "strato.agent.\(nodes[0].1.kind.name)"))
            try Lifecycle.run([LoopService(description: "agent session", body: { try session.run() }, requestStop: { session.stop() })],
                              logger: Logger(label: "strato.lifecycle"))
        }
    }

    struct GPU: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "gpu", abstract: "A GPU node (GPUs emulated from the catalogue of real models).")
        @OptionGroup var common: Common
        @Option(name: .customLong("gpu-model"), help: "GPU model from the catalogue (V100, A100-40GB, A100-80GB, H100, A10, T4, L4, …).") var gpuModel = "A100-80GB"
        @Option(help: "Number of GPUs.") var gpus = 1
        @Option(help: "Interconnect override: pcie or nvlink.") var interconnect: String?
        @Option(help: "Seed data for job emulation (default: data/ of the repository).") var data: String?
        @Option(help: "How jobs run: emulated (from published measurements) or process (a real command per job, CUDA_VISIBLE_DEVICES set to its GPUs).") var backend = "emulated"
        @Option(name: .customLong("job-command"), help: "process backend: the command each job runs (through /bin/sh -c; {job} is the job id; see ProcessJobRunner for its environment).") var jobCommand: String?
        @Option(name: .customLong("job-dir"), help: "process backend: where job folders (progress, checkpoints, logs) go.") var jobDir = ".strato/jobs"

        func run() throws {
            let ic: Interconnect? = try interconnect.map {
                switch $0.lowercased() {
                case "pcie": return .pcie
                case "nvlink": return .nvlink
                case "nvswitch": return .nvswitch
                default: throw ValidationError("--interconnect '\($0)' must be pcie, nvlink or nvswitch")
                }
            }
            // The same knowledge the coordinator and the twin start from, so emulated jobs run at
            // the rates the twin models (measured rows, and the same estimates where unmeasured).
            let (kb, result, _) = KnowledgeImporter.seeded(dataDirectory: DataPaths.dataDirectory(data))
            let execution = ExecutionModel(kb: kb)
            guard ["emulated", "process"].contains(backend) else { throw ValidationError("--backend '\(backend)' must be emulated or process") }
            if backend == "process" {
                guard let cmd = jobCommand, !cmd.trimmingCharacters(in: .whitespaces).isEmpty else {
                    throw ValidationError("--backend process needs --job-command")
                }
                let real = NvidiaSMI.list()
                var gpuModel = gpuModel
                if let real, let first = real.first {
                    guard real.count >= gpus else { throw ValidationError("--gpus \(gpus): nvidia-smi lists only \(real.count) GPUs on this host") }
                    print("process backend: \(real.count) real GPUs (nvidia-smi): \(real.map { "\($0.name) \($0.memoryMiB) MiB" }.joined(separator: ", "))")
                    // The node registers what it has: the scheduler plans on these figures.
                    if let found = GPUCatalog.model(smiName: first.name, memoryMiB: first.memoryMiB) {
                        if GPUCatalog.model(named: gpuModel)?.name != found.name {
                            print("process backend: registering as \(found.name), the catalogue's model for \(first.name), not --gpu-model \(gpuModel)")
                        }
                        gpuModel = found.name
                    } else {
                        print("process backend: the catalogue has no model for \(first.name); registering as --gpu-model \(gpuModel)")
                    }
                    if Set(real.prefix(gpus).map(\.name)).count > 1 { print("process backend: warning: the GPUs differ; all are described as \(gpuModel)") }
                } else {
                    print("process backend: no nvidia-smi on this host; jobs run as processes, GPUs described from the catalogue (emulated)")
                }
                try common.run { identity, plane in
                    let node = try EmulatedGPUNode(modelName: gpuModel, count: gpus, interconnect: ic)
                    node.realDevices = real
                    return GPU.hostFeatures(on: node, runner: ProcessJobRunner(command: ["/bin/sh", "-c", cmd], workDirectory: jobDir + "/" + identity.nodeID),
                                            replicas: result.rows.isEmpty ? nil : EmulatedReplicas(kb: kb), plane: plane)
                }
                return
            }
            try common.run { identity, plane in
                let seed = UInt64(truncatingIfNeeded: identity.nodeID.utf8.reduce(5381) { ($0 << 5) &+ $0 &+ Int($1) })
                return GPU.hostFeatures(on: try EmulatedGPUNode(modelName: gpuModel, count: gpus, interconnect: ic),
                                        runner: result.rows.isEmpty ? nil : EmulatedJobRunner(execution: execution, seed: seed),
                                        replicas: result.rows.isEmpty ? nil : EmulatedReplicas(kb: kb), plane: plane)
            }
        }

        /// The GPU node's features — the agent side's composition root: one line per feature.
        static func hostFeatures(on node: EmulatedGPUNode, runner: JobRunner?, replicas: EmulatedReplicas?, plane: DataPlaneHandler?) -> EmulatedGPUNode {
            let jobs = runner.map { JobsHandler(runner: $0, gpuModel: node.model.name, gpuCount: node.count) }
            let inference = replicas.map { InferenceHandler(replicas: $0, gpuModel: node.model.name, gpuCount: node.count,
                                                            busyElsewhere: { jobs?.busyGPUs ?? [] }) }
            // Requests move between replicas with their KV blocks over the node's data plane.
            let migration: MigrationHandler? = replicas.flatMap { r in plane.map { MigrationHandler(replicas: r, plane: $0.plane) } }
            // KV prefixes are loaded from and stored on the memory hosts over the same data plane.
            let tiers: KVTierCache? = replicas.flatMap { r in plane.map { KVTierCache(replicas: r, plane: $0.plane) } }
            // A migration whose destination has no room stages the request's KV on a memory host.
            migration?.staging = tiers
            node.handlers = [jobs as FeatureHandler?, inference as FeatureHandler?, migration as FeatureHandler?, tiers as FeatureHandler?].compactMap { $0 }
            node.busyGPUs = { (jobs?.busyGPUs ?? []).union(inference?.busyGPUs ?? []) }
            return node
        }
    }

    struct Memory: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "memory", abstract: "A memory host with DRAM, CXL and NVMe tiers (probed at start).")
        @OptionGroup var common: Common
        @Option(name: .customLong("tier"), help: "A tier KIND:CAPACITY[:PATH], e.g. dram:4GiB, cxl:8GiB, nvme:16GiB:/data (repeatable).")
        var tiers: [String] = ["dram:1GiB", "cxl:2GiB", "nvme:4GiB"]

        func run() throws {
            let specs: [MemoryHost.TierSpec]
            do { specs = try tiers.map(MemoryHost.TierSpec.parse) } catch { throw ValidationError("\(error)") }
            guard Set(specs.map(\.kind.rawValue)).count == specs.count else { throw ValidationError("--tier: each tier kind may appear once") }
            let dram = TierProbe.probeDRAM()   // measured once, shared by every virtual host
            try common.run { identity, plane in
                let host = try MemoryHost(specs: specs, dramProbe: dram, defaultNVMeDirectory: ".strato/nvme/\(identity.nodeID)")
                // A host with a data plane serves its tiers as a block store (virtual hosts only register).
                if let plane { try Memory.hostBlockStore(on: host, plane: plane.plane) }
                return host
            }
        }

        /// The memory host's block store: a backend per probed tier, fastest first, capacities as given.
        static func hostBlockStore(on host: MemoryHost, plane: DataPlane) throws {
            var backends: [(TierBackend, capacity: Int)] = []
            var probed: [TierKind: (bandwidthGBps: Double, latencyNs: Double)] = [:]
            let dramFigures = host.tiers.first { $0.kind == .dram } ?? host.tiers.first { $0.kind == .cxl }
            for t in host.tiers.sorted(by: { $0.kind.rawValue < $1.kind.rawValue }) {
                let capacity = Int(min(t.capacityBytes, UInt64(Int.max)))
                switch t.kind {
                case .dram:
                    backends.append((DRAMTier(), capacity)); probed[.dram] = (t.bandwidthGbps, t.latencyNs)
                case .cxl:
                    // Throttled from this host's DRAM figures (the CXL tier's own are those already scaled).
                    let bw = (dramFigures?.kind == .dram ? dramFigures!.bandwidthGbps : t.bandwidthGbps / EmulatedCXLTier.bandwidthFactor) * 1e9
                    let lat = (dramFigures?.kind == .dram ? dramFigures!.latencyNs : t.latencyNs / EmulatedCXLTier.latencyFactor) * 1e-9
                    backends.append((EmulatedCXLTier(dramBandwidthBytesPerSecond: bw, dramLatencySeconds: lat), capacity)); probed[.cxl] = (t.bandwidthGbps, t.latencyNs)
                case .nvme:
                    do {
                        // Spares (removed blocks' files kept to be written over): a quarter of the tier, at most 256 MiB.
                        let tier = try FileTier(directory: t.path, spareBudgetBytes: min(256 << 20, capacity / 4))
                        tier.enableWriteBehind()   // fsyncs off the session thread that heartbeats
                        tier.enableDetachedReads()   // and the gets' disk reads
                        backends.append((tier, capacity))
                    } catch { throw ValidationError("--tier nvme: \(error)") }
                    probed[.nvme] = (t.bandwidthGbps, t.latencyNs)
                default: continue
                }
            }
            let store: TieredBlockStore
            do { store = try TieredBlockStore(tiers: backends) } catch { throw ValidationError("--tier: \(error)") }
            let handler = TierStoreHandler(store: store, plane: plane, probed: probed)
            host.handlers = [handler]
            host.usedBytes = { kind in
                switch kind {
                case .dram: return handler.used(.dram)
                case .cxl: return handler.used(.cxl)
                case .nvme: return handler.used(.nvme)
                default: return 0
                }
            }
        }
    }

    struct Render: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "render", abstract: "An edge or cloud render site.")
        @OptionGroup var common: Common
        @Option(help: "Concurrent remote renderers.") var slots = 8
        @Option(name: .customLong("render-gpu"), help: "GPU model used for rendering.") var renderGPU = "L4"
        @Option(name: .customLong("max-fps"), help: "Frame-rate cap of a renderer.") var maxFPS = 60

        func run() throws {
            let kind = SiteKind(name: common.site) ?? .cloud
            try common.run { identity, plane in
                let site = try RenderSite(siteKind: kind, slots: slots, gpuModel: renderGPU, maxFPS: maxFPS)
                // A site with a data plane serves players' remote renderers (virtual sites only register).
                if let plane {
                    let handler = RenderSiteHandler(nodeID: identity.nodeID, plane: plane.plane, slots: slots, gpuModel: site.gpuModel, maxFPS: maxFPS)
                    site.handlers = [handler]
                    site.slotsUsed = { handler.used }
                }
                return site
            }
        }
    }
}
