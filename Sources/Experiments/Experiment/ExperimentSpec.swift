import Cluster
import Foundation
import Features
import Scheduling

/// One experiment, as read from SPEC.yaml: what to bring up, what to drive, what to break and
/// when, when to stop, how often to repeat, and what to write.
///
///     name: default
///     topology: default-topology.yaml        # relative to this file
///     workload: {kind: scheduling, jobs_per_hour: 30, hours: 2}
///     policy: hybrid
///     time_scale: 1500
///     end: jobs_done                         # or: duration
///     duration: 150s                         # the hard limit either way
///     repetitions: 1
///     seeds: [1]
///     faults:
///       - {at: 20s, action: kill, target: gpu-v100-0, for: 10s}
///     outputs: [trace, metrics, report]
public struct ExperimentSpec: Equatable {
    public enum WorkloadKind: String, Equatable, CaseIterable {
        /// LLM fine-tuning/training jobs in the D2.1 trace shape, replayed at `time_scale`.
        case scheduling
        /// A Gavel job trace file, replayed at `time_scale`.
        case gavelTrace = "gavel-trace"
        /// No driven work: membership, heartbeats and telemetry only (control-plane experiments).
        case idle
        /// Online inference services only (`services:`), no offline jobs.
        case services
        /// Players of the virtual world (`game:`), rendering locally or streamed from render sites.
        case game
    }

    /// `workload: {kind: game, game: {players: 6, devices: {phone: 3, laptop: 2, handheld: 1}, …}}`:
    /// the runner adds a world server (unless the topology has one) and one player process per
    /// device profile to the topology.
    public struct Game: Equatable {
        /// Players per device profile, in the order written.
        public var devices: [(name: String, count: Int)] = [("phone", 1)]
        public var behaviours = ["random-walk"]
        public var network: String?
        public var tickHz = 20.0
        public var viewDistance = 8
        public var otherLoad = 0.2
        public var dockAfter: Double?
        public var battery = 1.0
        public var policy = "adaptive"
        public var script: [String] = []
        public var players: Int { devices.reduce(0) { $0 + $1.count } }
        public static func == (a: Game, b: Game) -> Bool {
            a.devices.map(\.name) == b.devices.map(\.name) && a.devices.map(\.count) == b.devices.map(\.count) && a.behaviours == b.behaviours
                && a.network == b.network && a.tickHz == b.tickHz && a.viewDistance == b.viewDistance && a.otherLoad == b.otherLoad
                && a.dockAfter == b.dockAfter && a.battery == b.battery && a.policy == b.policy && a.script == b.script
        }
    }

    public struct Workload: Equatable {
        public var kind: WorkloadKind = .idle
        public var jobsPerHour = 30.0
        public var hours = 2.0
        public var traceFile: String?
        public var maxJobs: Int?
        /// Online inference services driven with requests alongside the jobs.
        public var services: Services?
        public var game: Game?
    }

    /// The two Azure-shaped LLM services (code and conversation), each at `rps` mean requests per
    /// trace second, on replicas of one `gpu`, under a `slo_s` latency objective.
    public struct Services: Equatable {
        public var rps: Double
        public var gpu: String
        public var sloSeconds: Double = 20
        /// Which Azure trace shapes the services follow: `code`, `conversation` or `both`; or
        /// `mooncake`: one service replaying the Mooncake conversation trace's requests (real
        /// arrivals, scaled to `rps`, with their prompts' shared-prefix chunk keys).
        public var trace = "both"
        /// The services' model (default: Meta-Llama-3-8B for `mooncake`, Llama-2-7b for Azure).
        public var model: String?
        /// `weights: offload`: a model larger than its GPUs streams the layers that do not fit
        /// from a memory host's tier every step (the tier from the offload policy).
        public var offloadWeights = false
        /// Memory-tier offload policies to compare: one run per policy (empty: the topology's).
        public var offload: [String] = []
        /// Replicas each service keeps at least (nil: as its rate needs, at least one).
        public var replicas: Int?
        /// Live migration policies to compare: one run per policy (empty: the topology's).
        public var migration: [String] = []
        /// How requests migrate (`live`, `blocking`, `recompute`), what share of them is high
        /// priority, and the KV bytes replicas hold (nil: the coordinator's default).
        public var method: String?
        /// Stage a migration's KV on a memory host when its destination has no room (nil: off).
        public var staging: Bool?
        public var priorityShare = 0.0
        public var kvBytesScale: Double?
        public var kvLink: String?
        /// Sequences each replica's engine runs at once while KV blocks last (vLLM's
        /// `max_num_seqs`; nil: the planned batch).
        public var maxNumSeqs: Int?
        /// Share of each GPU's memory replicas use for weights and KV cache (vLLM's
        /// `gpu_memory_utilization`; nil: 0.9). Lower it for a KV-memory-bound engine.
        public var gpuMemoryUtilization: Double?
        /// Control-plane delay assumed per request (wall seconds) when checking the time scale.
        public static let controlPlaneSeconds = 0.005
        /// The largest time scale at which `controlPlaneSeconds` of wall time stays within 10 % of
        /// the SLO: every wall millisecond a request spends in transit counts `time_scale` times.
        public var maxTimeScale: Double { sloSeconds * 0.1 / Services.controlPlaneSeconds }
    }

    public enum EndCondition: String, Equatable { case jobsDone = "jobs_done", duration }

    public enum FaultAction: String, Equatable, CaseIterable, Codable {
        case kill, pause, partition, slow
        case crashCoordinator = "crash_coordinator"
        /// The operator drains the node: no new work goes to it; its inference requests migrate away.
        case drain
        /// A memory host's NVMe disk fills up (emulated: every write to the tier fails as on a full
        /// disk; puts are refused as tier-full, blocks demoted there are dropped), then frees.
        case fillDisk = "fill_disk"

        /// What ends the window.
        public var healName: String {
            switch self {
            case .kill: return "restart"
            case .pause: return "resume"
            case .partition: return "heal"
            case .slow: return "restore"
            case .crashCoordinator: return "restart coordinator"
            case .drain: return "undrain"
            case .fillDisk: return "free disk"
            }
        }
    }

    public struct Fault: Equatable, Codable {
        public var at: Double
        /// Window length; nil = until the end of the run (the final heal ends it).
        public var duration: Double?
        public var action: FaultAction
        /// As written: a node id, `kind:K`, `site:S`, `random` or `random:K`.
        public var target: String
        /// Resolved node ids (empty for the coordinator).
        public var nodes: [String]
        /// slow: fraction of one CPU the process may use (0 < cpu < 1), added latency, bandwidth.
        public var cpu: Double?
        public var latencyMs: Double?
        public var bandwidth: String?
        public var line: Int

        public init(at: Double, duration: Double?, action: FaultAction, target: String, nodes: [String],
                    cpu: Double? = nil, latencyMs: Double? = nil, bandwidth: String? = nil, line: Int = 0) {
            self.at = at; self.duration = duration; self.action = action; self.target = target; self.nodes = nodes
            self.cpu = cpu; self.latencyMs = latencyMs; self.bandwidth = bandwidth; self.line = line
        }

        public var end: Double? { duration.map { at + $0 } }
        public var describe: String {
            var s = "\(action.rawValue) \(nodes.isEmpty ? "coordinator" : nodes.joined(separator: ","))"
            if target.hasPrefix("random") || target.contains(":") { s += " (\(target))" }
            if let c = cpu { s += String(format: " cpu %.0f%%", c * 100) }
            if let l = latencyMs { s += " +\(fmt(l)) ms" }
            if let b = bandwidth { s += " \(b)" }
            return s
        }
    }

    public var name: String
    public var description = ""
    public var file: String
    public var topologyFile: String
    public var topology: Topology
    public var workload = Workload()
    public var policy: String?
    public var timeScale: Double?
    public var end: EndCondition = .duration
    public var duration: Double = 60
    public var repetitions = 1
    public var seeds: [UInt64] = [1]
    public var faults: [Fault] = []
    public var outputs: Set<String> = ["trace", "metrics", "report"]
    public var heartbeatSample: UInt64 = 5
    /// Seconds to wait for every node to be alive before the workload starts.
    public var startTimeout: Double = 60

    public static let outputNames: Set<String> = ["trace", "metrics", "report"]

    public static func load(file: String) throws -> ExperimentSpec {
        try parse(YAMLValue.load(file: file))
    }

    public static func parse(_ text: String, file: String, baseDirectory: String? = nil) throws -> ExperimentSpec {
        try parse(YAMLValue.parse(text, file: file), baseDirectory: baseDirectory)
    }

    static func parse(_ root: YAMLValue, baseDirectory: String? = nil) throws -> ExperimentSpec {
        let keys: Set<String> = ["name", "description", "topology", "workload", "policy", "time_scale", "end", "duration",
                                 "repetitions", "seeds", "faults", "outputs", "tracing", "start_timeout"]
        let m = try root.mapping(allowed: keys)
        let base = baseDirectory ?? (root.file as NSString).deletingLastPathComponent
        guard let nameValue = m["name"] else { throw root.fail("missing 'name'") }
        let name = try nameValue.string()
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw nameValue.fail("name '\(name)' may hold only letters, digits, '-', '_' and '.' (it names the results folder)")
        }
        // Topology: a file (relative to the spec) or an inline mapping.
        guard let topoValue = m["topology"] else { throw root.fail("missing 'topology' (a file, e.g. default-topology.yaml, or an inline mapping)") }
        let topology: Topology, topologyFile: String
        if case .scalar = topoValue.node {
            let rel = try topoValue.string()
            let path = rel.hasPrefix("/") ? rel : (base.isEmpty ? rel : base + "/" + rel)
            guard FileManager.default.fileExists(atPath: path) else { throw topoValue.fail("topology file '\(path)' does not exist") }
            topology = try Topology.load(file: path)
            topologyFile = path
        } else {
            topology = try Topology.parse(topoValue)
            topologyFile = root.file
        }
        var spec = ExperimentSpec(name: name, file: root.file, topologyFile: topologyFile, topology: topology)
        spec.description = try m["description"]?.string() ?? ""
        if let w = m["workload"] { spec.workload = try parseWorkload(w, base: base) }
        if let p = m["policy"] {
            let policy = try p.string()
            guard Policies.named(policy) != nil else { throw p.fail("unknown policy '\(policy)' (known: \(Policies.names.joined(separator: ", ")))") }
            spec.policy = policy
            spec.topology.coordinator.policy = policy
        }
        if let v = m["time_scale"] {
            let x = try v.double()
            guard x > 0 && x <= 1_000_000 else { throw v.fail("time_scale \(x) must be > 0 and ≤ 1000000") }
            spec.timeScale = x
            spec.topology.coordinator.timeScale = x
        }
        if let sv = spec.workload.services {
            if let x = sv.method { spec.topology.coordinator.migrationMethod = x }
            if let x = sv.staging {
                if x && !spec.topology.nodes.contains(where: { if case .memory = $0.spec { return true }; return false }) {
                    throw (m["workload"] ?? m["name"]!).fail("migration_staging needs a memory host in the topology to stage KV on")
                }
                spec.topology.coordinator.migrationStaging = x
            }
            if let x = sv.kvBytesScale { spec.topology.coordinator.kvBytesScale = x }
            if let x = sv.kvLink { spec.topology.coordinator.kvLink = x }
            if let first = sv.migration.first { spec.topology.coordinator.migrationPolicy = first }
            if let first = sv.offload.first { spec.topology.coordinator.offloadPolicy = first }
            if !spec.topology.nodes.contains(where: { if case .gpu(let g, _) = $0.spec { return GPUCatalog.model(named: g)?.name == sv.gpu }; return false }) {
                throw (m["workload"] ?? m["name"]!).fail("services run on \(sv.gpu), but no GPU node of the topology has that model")
            }
            if spec.topology.coordinator.timeScale > sv.maxTimeScale {
                throw (m["time_scale"] ?? m["workload"]!).fail("time_scale \(fmt(spec.topology.coordinator.timeScale)) is too high for services with a \(fmt(sv.sloSeconds)) s SLO: each wall millisecond of a request's transit counts time_scale times; use at most \(fmt(sv.maxTimeScale))")
            }
        }
        if let g = spec.workload.game { try addGameNodes(g, to: &spec.topology, at: m["workload"]!) }
        if let v = m["duration"] {
            spec.duration = try seconds(v)
            guard spec.duration > 0 && spec.duration <= 86_400 else { throw v.fail("duration must be > 0 s and ≤ 24 h") }
        }
        if let v = m["start_timeout"] { spec.startTimeout = try seconds(v) }
        if let v = m["end"] {
            let e = try v.string()
            guard let c = EndCondition(rawValue: e) else { throw v.fail("end '\(e)' must be jobs_done or duration") }
            if c == .jobsDone && (spec.workload.kind == .idle || spec.workload.kind == .game) { throw v.fail("end: jobs_done needs a workload with jobs (this one is \(spec.workload.kind.rawValue): it runs for its duration)") }
            spec.end = c
        } else if spec.workload.kind != .idle && spec.workload.kind != .game {
            spec.end = .jobsDone
        }
        if let v = m["repetitions"] { spec.repetitions = try v.int(in: 1...100) }
        if let v = m["seeds"] {
            spec.seeds = try v.sequence().map { s in
                let n = try s.int(in: 0...Int.max)
                return UInt64(n)
            }
            if spec.seeds.isEmpty { throw v.fail("seeds is empty; give one seed per repetition") }
        }
        if m["seeds"] != nil && spec.seeds.count != spec.repetitions {
            if m["repetitions"] == nil { spec.repetitions = spec.seeds.count } else {
                throw m["seeds"]!.fail("\(spec.seeds.count) seeds for \(spec.repetitions) repetitions; give one seed per repetition")
            }
        } else if m["seeds"] == nil {
            spec.seeds = (1...spec.repetitions).map { UInt64($0) }
        }
        if let o = m["outputs"] {
            var set = Set<String>()
            for v in try o.sequence() {
                let s = try v.string()
                guard outputNames.contains(s) else { throw v.fail("unknown output '\(s)'; expected \(outputNames.sorted().joined(separator: ", "))") }
                set.insert(s)
            }
            spec.outputs = set
        }
        if let t = m["tracing"] {
            let tm = try t.mapping(allowed: ["heartbeat_sample"])
            if let s = tm["heartbeat_sample"] { spec.heartbeatSample = UInt64(try s.int(in: 1...1_000_000)) }
        }
        if let f = m["faults"] {
            for (i, fv) in try f.sequence().enumerated() {
                spec.faults.append(try parseFault(fv, index: i, spec: spec))
            }
            try checkOverlaps(spec.faults, f)
        }
        return spec
    }

    /// `game: {players: 4, devices: [phone, laptop] | {phone: 2, laptop: 1}, behaviour: random-walk | [..],
    /// network: 5g, tick_hz: 20, view_distance: 8, other_load: 0.2, dock_after: 60s, battery: 1,
    /// policy: adaptive, script: ["60 * edge"]}`.
    static func parseGame(_ v: YAMLValue) throws -> Game {
        let m = try v.mapping(allowed: ["players", "devices", "behaviour", "network", "tick_hz", "view_distance", "other_load", "dock_after", "battery", "policy", "script", "duration"])
        var g = Game()
        let players = try m["players"]?.int(in: 1...10_000)
        if let d = m["devices"] {
            var list: [(String, Int)] = []
            func known(_ name: String, _ at: YAMLValue) throws -> String {
                guard let p = DeviceCatalog.device(named: name) else { throw at.fail("unknown device profile '\(name)' (known: \(DeviceCatalog.deviceNames.joined(separator: ", ")))") }
                return p.name
            }
            switch d.node {
            case .mapping(let entries):
                for (k, node) in entries {
                    let key = YAMLValue(node: k, file: d.file, path: "workload.game.devices")
                    let count = try YAMLValue(node: node, file: d.file, path: "workload.game.devices.\(try key.string())").int(in: 0...10_000)
                    if count > 0 { list.append((try known(try key.string(), key), count)) }
                }
                if let n = players, n != list.reduce(0, { $0 + $1.1 }) { throw d.fail("devices add up to \(list.reduce(0) { $0 + $1.1 }) players, but players is \(n)") }
            case .scalar:
                list = [(try known(try d.string(), d), players ?? 1)]
            default:
                let names = try d.sequence().map { try known(try $0.string(), $0) }
                guard !names.isEmpty else { throw d.fail("devices is empty") }
                let n = players ?? names.count
                // Spread evenly, the first profiles taking the remainder.
                list = names.enumerated().map { i, name in (name, n / names.count + (i < n % names.count ? 1 : 0)) }.filter { $0.1 > 0 }
            }
            guard !list.isEmpty else { throw d.fail("no players on any device") }
            g.devices = list
        } else if let n = players {
            g.devices = [("phone", n)]
        }
        if let b = m["behaviour"] {
            let names: [String]
            if case .scalar = b.node { names = [try b.string()] } else { names = try b.sequence().map { try $0.string() } }
            for n in names where Behaviour.named(n) == nil { throw b.fail("unknown behaviour '\(n)' (known: \(Behaviour.allCases.map(\.rawValue).joined(separator: ", ")))") }
            guard !names.isEmpty else { throw b.fail("behaviour is empty") }
            g.behaviours = names
        }
        if let x = m["network"] {
            let n = try x.string()
            guard DeviceCatalog.network(named: n) != nil else { throw x.fail("unknown network class '\(n)' (known: \(DeviceCatalog.networkNames.joined(separator: ", ")))") }
            g.network = n
        }
        if let x = m["tick_hz"] {
            g.tickHz = try x.double()
            guard g.tickHz >= 1 && g.tickHz <= 1000 else { throw x.fail("tick_hz \(g.tickHz) must be within 1 … 1000") }
        }
        if let x = m["view_distance"] { g.viewDistance = try x.int(in: 2...32) }
        if let x = m["other_load"] {
            g.otherLoad = try x.double()
            guard (0...0.9).contains(g.otherLoad) else { throw x.fail("other_load \(g.otherLoad) must be within 0 … 0.9") }
        }
        if let x = m["dock_after"] { g.dockAfter = try seconds(x) }
        if let x = m["battery"] {
            g.battery = try x.double()
            guard (0...1).contains(g.battery) else { throw x.fail("battery \(g.battery) must be within 0 … 1") }
        }
        if let x = m["script"] { g.script = try x.sequence().map { try $0.string() } }
        if let x = m["policy"] { g.policy = try x.string() }
        do { _ = try RenderPolicies.named(g.policy, script: g.script) } catch { throw (m["policy"] ?? m["script"] ?? v).fail("\(error)") }
        return g
    }

    /// The world server and player processes a game workload adds to the topology.
    static func addGameNodes(_ g: Game, to t: inout Topology, at v: YAMLValue) throws {
        let renderSites = t.nodes.filter { $0.kind == .render }
        if g.policy == "edge" && !renderSites.contains(where: { $0.siteKind == .edge }) { throw v.fail("render policy edge needs a render node at an edge site in the topology") }
        if g.policy == "cloud" && !renderSites.contains(where: { $0.siteKind == .cloud }) { throw v.fail("render policy cloud needs a render node at a cloud site in the topology") }
        if ["adaptive", "scripted"].contains(g.policy) && renderSites.isEmpty { throw v.fail("render policy \(g.policy) needs at least one render node in the topology") }
        if !t.nodes.contains(where: { $0.kind == .world }) {
            // The world server at a cloud site of its own: no emulated delay of its own, so the
            // delay to it is the player's or the render site's (a site's delay applies to every
            // link of its nodes, and two nodes of one site would pay it twice between them).
            t.nodes.append(Topology.Node(id: "world-0", kind: .world, siteName: "world", siteKind: .cloud, labels: [:],
                                         spec: .world(tickHz: g.tickHz, entities: 64, seed: 1), virtual: 1, line: v.line))
        }
        let taken = Set(t.nodeIDs)
        for (device, count) in g.devices {
            var p = Topology.PlayerSpec(devices: [device])
            p.behaviours = g.behaviours; p.network = g.network; p.viewDistance = g.viewDistance; p.otherLoad = g.otherLoad
            p.dockAfter = g.dockAfter; p.battery = g.battery
            let id = "player-\(device)"
            let node = Topology.Node(id: id, kind: .player, siteName: "devices", siteKind: .device, labels: [:], spec: .player(p), virtual: count, line: v.line)
            let ids = count > 1 ? (0..<count).map { "\(id)-\($0)" } : [id]
            if let clash = ids.first(where: taken.contains) { throw v.fail("the game's player id '\(clash)' is already a node of the topology") }
            t.nodes.append(node)
        }
        t.coordinator.renderPolicy = g.policy
        t.coordinator.renderScript = g.script
    }

    static func parseWorkload(_ w: YAMLValue, base: String) throws -> Workload {
        let m = try w.mapping(allowed: ["kind", "jobs_per_hour", "hours", "trace", "max_jobs", "services", "game"])
        guard let k = m["kind"] else { throw w.fail("missing 'kind' (\(WorkloadKind.allCases.map(\.rawValue).joined(separator: ", ")))") }
        let kindText = try k.string()
        guard let kind = WorkloadKind(rawValue: kindText) else {
            throw k.fail("unknown workload kind '\(kindText)'; expected \(WorkloadKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var out = Workload(kind: kind)
        if let v = m["jobs_per_hour"] {
            out.jobsPerHour = try v.double()
            guard out.jobsPerHour > 0 && out.jobsPerHour <= 100_000 else { throw v.fail("jobs_per_hour must be > 0 and ≤ 100000") }
        }
        if let v = m["hours"] {
            out.hours = try v.double()
            guard out.hours > 0 && out.hours <= 24 * 30 else { throw v.fail("hours must be > 0 and ≤ 720") }
        }
        if let v = m["max_jobs"] { out.maxJobs = try v.int(in: 1...1_000_000) }
        if let v = m["trace"] {
            let rel = try v.string()
            let path = rel.hasPrefix("/") ? rel : (base.isEmpty ? rel : base + "/" + rel)
            guard kind == .gavelTrace else { throw v.fail("'trace' belongs to gavel-trace workloads") }
            guard FileManager.default.fileExists(atPath: path) else { throw v.fail("trace file '\(path)' does not exist") }
            out.traceFile = path
        } else if kind == .gavelTrace {
            throw w.fail("a gavel-trace workload needs 'trace: FILE'")
        }
        if let g = m["game"] {
            guard kind == .game else { throw g.fail("'game' belongs to game workloads (kind: game)") }
            out.game = try parseGame(g)
        } else if kind == .game {
            throw w.fail("a game workload needs 'game: {players: N, devices: …}'")
        }
        if let sv = m["services"] {
            guard kind == .scheduling || kind == .services else { throw sv.fail("'services' belongs to scheduling and services workloads") }
            let sm = try sv.mapping(allowed: ["rps", "gpu", "slo_s", "trace", "replicas", "migration", "method", "migration_staging", "priority_share", "kv_bytes_scale", "kv_link", "max_num_seqs", "gpu_memory_utilization",
                                              "model", "offload", "weights"])
            guard let r = sm["rps"] else { throw sv.fail("services need 'rps' (mean requests per trace second, per service)") }
            let rps = try r.double()
            guard rps > 0 && rps <= 10_000 else { throw r.fail("rps must be > 0 and ≤ 10000") }
            guard let g = sm["gpu"] else { throw sv.fail("services need 'gpu' (the GPU model their replicas run on)") }
            let gpu = try g.string()
            guard let model = GPUCatalog.model(named: gpu) else { throw g.fail("unknown GPU model '\(gpu)' (known: \(GPUCatalog.names.joined(separator: ", ")))") }
            var out2 = Services(rps: rps, gpu: model.name)
            if let v = sm["slo_s"] {
                out2.sloSeconds = try v.double()
                guard out2.sloSeconds > 0 && out2.sloSeconds <= 3600 else { throw v.fail("slo_s must be > 0 and ≤ 3600") }
            }
            if let v = sm["trace"] {
                let t = try v.string()
                guard ["code", "conversation", "both", "mooncake"].contains(t) else {
                    throw v.fail("trace '\(t)' must be code, conversation or both (the Azure LLM inference traces) or mooncake (the Mooncake conversation trace with prefix hashes)")
                }
                out2.trace = t
            }
            if let v = sm["replicas"] { out2.replicas = try v.int(in: 1...1000) }
            if let v = sm["max_num_seqs"] { out2.maxNumSeqs = try v.int(in: 1...4096) }
            if let v = sm["gpu_memory_utilization"] {
                let x = try v.double()
                guard x > 0 && x <= 1 else { throw v.fail("gpu_memory_utilization \(x) must be > 0 and ≤ 1 (the share of each GPU's memory for weights and KV cache, as vLLM's)") }
                out2.gpuMemoryUtilization = x
            }
            if let v = sm["migration"] { out2.migration = try Self.policyList(v, what: "migration", known: MigrationPolicies.names) }
            if let v = sm["migration_staging"] { out2.staging = try v.bool() }
            if let v = sm["method"] {
                let x = try v.string()
                guard ["live", "blocking", "recompute"].contains(x) else { throw v.fail("method '\(x)' must be live, blocking or recompute") }
                out2.method = x
            }
            if let v = sm["model"] {
                let name = try v.string()
                guard let arch = ModelCatalog.model(named: name) else { throw v.fail("unknown model '\(name)' (known: \(ModelCatalog.models.map(\.name).joined(separator: ", ")))") }
                out2.model = arch.name
            }
            if let v = sm["weights"] {
                let x = try v.string()
                guard ["gpu", "offload"].contains(x) else { throw v.fail("weights '\(x)' must be gpu (the model fits its GPUs) or offload (layers that do not fit are streamed from a memory host's tier every step)") }
                out2.offloadWeights = x == "offload"
            }
            if let v = sm["offload"] {
                out2.offload = try Self.policyList(v, what: "offload", known: OffloadPolicies.names)
                if out2.migration.count > 1 { throw v.fail("compare migration policies or offload policies in one spec, not both") }
            }
            if let v = sm["priority_share"] {
                out2.priorityShare = try v.double()
                guard (0...1).contains(out2.priorityShare) else { throw v.fail("priority_share \(out2.priorityShare) must be within 0 … 1 (the share of high-priority requests)") }
            }
            if let v = sm["kv_bytes_scale"] {
                let x = try v.double()
                guard x >= 0 && x <= 1 else { throw v.fail("kv_bytes_scale \(x) must be within 0 … 1 (real bytes held per KV block, as a fraction of its real size)") }
                out2.kvBytesScale = x
            }
            if let v = sm["kv_link"] {
                let x = try v.string()
                if x != "0" { do { _ = try NetworkConditions.parseBandwidth(x) } catch { throw v.fail("kv_link: \(error)") } }
                out2.kvLink = x
            }
            out.services = out2
        } else if kind == .services {
            throw w.fail("a services workload needs 'services' (rps, gpu, …)")
        }
        if let v = m["jobs_per_hour"], kind == .services { throw v.fail("'jobs_per_hour' does not apply to a services workload (it has no offline jobs)") }
        for key in ["jobs_per_hour", "hours"] where m[key] != nil && kind == .idle {
            throw m[key]!.fail("'\(key)' does not apply to an idle workload")
        }
        return out
    }

    static func parseFault(_ fv: YAMLValue, index: Int, spec: ExperimentSpec) throws -> Fault {
        let m = try fv.mapping(allowed: ["at", "for", "action", "target", "cpu", "latency_ms", "bandwidth", "seed"])
        guard let atValue = m["at"] else { throw fv.fail("missing 'at' (e.g. 20s)") }
        guard let actionValue = m["action"] else { throw fv.fail("missing 'action' (\(FaultAction.allCases.map(\.rawValue).joined(separator: ", ")))") }
        let actionText = try actionValue.string()
        guard let action = FaultAction(rawValue: actionText) else {
            throw actionValue.fail("unknown action '\(actionText)'; expected \(FaultAction.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let at = try seconds(atValue)
        guard at >= 0 else { throw atValue.fail("'at' must not be negative") }
        guard at < spec.duration else {
            throw atValue.fail("fault at \(fmt(at)) s never happens: the run lasts at most \(fmt(spec.duration)) s (duration)")
        }
        var duration: Double?
        if let f = m["for"] {
            let d = try seconds(f)
            guard d > 0 else { throw f.fail("'for' must be > 0 s") }
            guard at + d <= spec.duration else {
                throw f.fail("the window \(fmt(at))–\(fmt(at + d)) s ends after the run's duration (\(fmt(spec.duration)) s)")
            }
            duration = d
        }
        var fault = Fault(at: at, duration: duration, action: action, target: "", nodes: [], line: fv.line)
        if action == .crashCoordinator {
            if let t = m["target"], try t.string() != "coordinator" { throw t.fail("crash_coordinator targets the coordinator; leave 'target' out") }
            fault.target = "coordinator"
        } else {
            guard let t = m["target"] else { throw fv.fail("missing 'target' (a node id, kind:K, site:S, random or random:K)") }
            fault.target = try t.string()
            let seed = try m["seed"].map { UInt64(try $0.int(in: 0...Int.max)) } ?? (spec.seeds.first ?? 1) &+ UInt64(index)
            fault.nodes = try resolveTarget(fault.target, in: spec.topology, seed: seed, at: t)
        }
        if let c = m["cpu"] {
            guard action == .slow else { throw c.fail("'cpu' belongs to slow faults") }
            let x = try c.double()
            guard x > 0 && x < 1 else { throw c.fail("cpu \(x) must be between 0 and 1 (the fraction of one CPU the process keeps)") }
            fault.cpu = x
        }
        if let l = m["latency_ms"] {
            guard action == .slow else { throw l.fail("'latency_ms' belongs to slow faults") }
            let x = try l.double()
            guard x > 0 && x <= 60_000 else { throw l.fail("latency_ms must be > 0 and ≤ 60000") }
            fault.latencyMs = x
        }
        if let b = m["bandwidth"] {
            guard action == .slow else { throw b.fail("'bandwidth' belongs to slow faults") }
            let text = try b.string()
            guard ExperimentSpec.bandwidthBytesPerSecond(text) != nil else { throw b.fail("bandwidth '\(text)' is not a rate like 10mbit, 1gbit or 5MB/s") }
            fault.bandwidth = text
        }
        if action == .fillDisk {
            for n in fault.nodes {
                guard case .memory(let tiers)? = spec.topology.nodes.first(where: { $0.id == n })?.spec, tiers.contains(where: { $0.kind == .nvme }) else {
                    throw fv.fail("fill_disk targets memory hosts with an NVMe tier; \(n) is not one")
                }
            }
        }
        if action == .slow && fault.cpu == nil && fault.latencyMs == nil && fault.bandwidth == nil {
            throw fv.fail("a slow fault needs cpu, latency_ms or bandwidth")
        }
        return fault
    }

    /// Node ids a target names. Virtual nodes are hosted by one process: faults act on processes,
    /// so a target names topology nodes (a virtual group by its base id).
    public static func resolveTarget(_ target: String, in topology: Topology, seed: UInt64, at v: YAMLValue? = nil) throws -> [String] {
        func fail(_ msg: String) -> Error {
            v?.fail(msg) ?? SpecError(file: topology.file, line: 0, field: "target", message: msg)
        }
        let nodes = topology.nodes
        let ids = nodes.map(\.id)
        if target == "random" || target.hasPrefix("random:") {
            var pool = nodes
            if target.hasPrefix("random:") {
                let k = String(target.dropFirst(7))
                pool = nodes.filter { $0.kind.name == k }
                if pool.isEmpty { throw fail("no nodes of kind '\(k)' to choose from (kinds: gpu, memory, render)") }
            }
            var rng = SplitMix64(seed: seed)
            return [pool[Int(rng.next() % UInt64(pool.count))].id]
        }
        if target.hasPrefix("kind:") {
            let k = String(target.dropFirst(5))
            let hit = nodes.filter { $0.kind.name == k }.map(\.id)
            if hit.isEmpty { throw fail("no nodes of kind '\(k)' in the topology (kinds: gpu, memory, render)") }
            return hit
        }
        if target.hasPrefix("site:") {
            let s = String(target.dropFirst(5))
            let hit = nodes.filter { $0.siteName == s }.map(\.id)
            if hit.isEmpty { throw fail("no nodes at site '\(s)'; sites: \(Array(Set(nodes.map(\.siteName))).sorted().joined(separator: ", "))") }
            return hit
        }
        guard ids.contains(target) else {
            throw fail("unknown node '\(target)' in the topology; nodes: \(ids.joined(separator: ", "))")
        }
        return [target]
    }

    /// Two windows on the same node may not overlap (a paused node cannot also be killed); the
    /// coordinator crashes one at a time.
    static func checkOverlaps(_ faults: [Fault], _ where_: YAMLValue) throws {
        for (i, a) in faults.enumerated() {
            for b in faults[(i + 1)...] {
                let shared = a.action == .crashCoordinator && b.action == .crashCoordinator ? ["coordinator"] : Array(Set(a.nodes).intersection(b.nodes))
                guard !shared.isEmpty else { continue }
                let aEnd = a.end ?? .infinity, bEnd = b.end ?? .infinity
                if a.at < bEnd && b.at < aEnd {
                    throw SpecError(file: where_.file, line: b.line, field: "faults",
                                    message: "faults at lines \(a.line) and \(b.line) overlap on \(shared.sorted().joined(separator: ", ")) (\(fmt(a.at))–\(aEnd.isFinite ? fmt(aEnd) : "end") s and \(fmt(b.at))–\(bEnd.isFinite ? fmt(bEnd) : "end") s)")
                }
            }
        }
    }

    /// "90s", "2m", "1h", "1500ms" or a plain number of seconds (`NetworkConditions.parseSeconds`).
    static func seconds(_ v: YAMLValue) throws -> Double {
        let text = try v.string()
        do { return try NetworkConditions.parseSeconds(text, bareUnitSeconds: 1, what: "duration", expected: "a duration like 30s, 2m or 1500ms") } catch {
            throw v.fail("\(error)")
        }
    }

    /// "10mbit", "1gbit", "500kbit", "5MB/s", "100KB/s" → bytes per second (`NetworkConditions.parseBandwidth`).
    public static func bandwidthBytesPerSecond(_ text: String) -> Double? {
        (try? NetworkConditions.parseBandwidth(text)) ?? nil
    }

    /// A policy name or a list of them (one run each): known, none twice, at least one.
    static func policyList(_ v: YAMLValue, what: String, known: [String]) throws -> [String] {
        let names: [YAMLValue]
        if case .scalar = v.node { names = [v] } else { names = try v.sequence() }
        var out: [String] = []
        for n in names {
            let p = try n.string()
            guard known.contains(p) else { throw n.fail("unknown \(what) policy '\(p)' (known: \(known.joined(separator: ", ")))") }
            guard !out.contains(p) else { throw n.fail("\(what) policy '\(p)' is listed twice") }
            out.append(p)
        }
        if out.isEmpty { throw v.fail("\(what) lists no policy (known: \(known.joined(separator: ", ")))") }
        return out
    }

    /// The plan `--dry-run` prints.
    public func plan() -> String {
        var s = "experiment \(name)\(description.isEmpty ? "" : ": \(description)")\n"
        s += "  spec        \(file)\n"
        s += "  topology    \(topologyFile) (\(topology.nodeIDs.count) nodes: \(topology.nodes.map { "\($0.id)" }.joined(separator: ", ")))\n"
        switch workload.kind {
        case .idle: s += "  workload    idle (membership, heartbeats and telemetry only)\n"
        case .scheduling: s += "  workload    scheduling: \(fmt(workload.jobsPerHour)) jobs/h over \(fmt(workload.hours)) h of trace time (D2.1 shape)\(workload.maxJobs.map { ", at most \($0) jobs" } ?? "")\n"
            if let sv = workload.services {
                s += "  services    2 Azure-shaped LLM services (code, conversation), \(fmt(sv.rps)) requests/s each on average, on \(sv.gpu), SLO \(fmt(sv.sloSeconds)) s\n"
            }
        case .services:
            if let sv = workload.services {
                let names = sv.trace == "both" ? "code, conversation" : sv.trace
                s += "  workload    inference services only over \(fmt(workload.hours)) h of trace time\n"
                s += (sv.trace == "mooncake" ? "  services    the Mooncake conversation trace (real arrivals and prefix hashes) on \(sv.model ?? "Meta-Llama-3-8B"), \(fmt(sv.rps)) requests/s on average, on \(sv.gpu), SLO \(fmt(sv.sloSeconds)) s"
                      : "  services    Azure-shaped LLM services (\(names)) of \(sv.model ?? "Llama-2-7b"), \(fmt(sv.rps)) requests/s each on average, on \(sv.gpu), SLO \(fmt(sv.sloSeconds)) s")
                    + (sv.offloadWeights ? ", weights that do not fit streamed from a memory tier" : "")
                    + (sv.replicas.map { ", at least \($0) replicas each" } ?? "") + (sv.priorityShare > 0 ? ", \(fmt(sv.priorityShare * 100)) % high priority" : "") + "\n"
            }
        case .game:
            if let g = workload.game {
                s += "  workload    game: \(g.players) players (\(g.devices.map { "\($0.count) \($0.name)" }.joined(separator: ", "))), \(g.behaviours.joined(separator: ", ")), world at \(fmt(g.tickHz)) Hz, view distance \(g.viewDistance)\(g.network.map { ", on \($0)" } ?? "")\n"
                s += "  render      policy \(g.policy)" + (g.script.isEmpty ? "" : " (\(g.script.joined(separator: "; ")))") + "; frame times emulated from device and site GPUs\n"
            }
        case .gavelTrace: s += "  workload    gavel trace \(workload.traceFile ?? "")\(workload.maxJobs.map { ", first \($0) jobs" } ?? "")\n"
        }
        s += "  policy      \(topology.coordinator.policy), time scale \(fmt(topology.coordinator.timeScale))×\n"
        let runsEach = repetitions == 1 ? "one run" : "\(repetitions) runs"
        if let sv = workload.services {
            s += "  migration   \((sv.migration.isEmpty ? [topology.coordinator.migrationPolicy] : sv.migration).joined(separator: ", ")) (\(runsEach) each), method \(topology.coordinator.migrationMethod)"
                + (topology.coordinator.kvBytesScale.map { ", kv_bytes_scale \($0)" } ?? "") + (topology.coordinator.kvLink.map { ", KV link \($0)" } ?? "") + "\n"
            // Offload needs memory hosts: without any, the coordinator's default policy has nothing to place.
            let memoryHosts = topology.nodes.contains { if case .memory = $0.spec { return true } else { return false } }
            if memoryHosts || !sv.offload.isEmpty {
                s += "  offload     \((sv.offload.isEmpty ? [topology.coordinator.offloadPolicy ?? "tiered"] : sv.offload).joined(separator: ", "))"
                    + (sv.offload.count > 1 ? " (\(runsEach) each)" : "") + (topology.coordinator.tierLink.map { ", tier link \($0)" } ?? "") + "\n"
            } else { s += "  offload     none (no memory hosts in the topology)\n" }
        }
        let allDone = workload.kind == .services ? "when every request is answered" : "when every job is done"
        s += "  end         \(end == .jobsDone ? "\(allDone), at most \(fmt(duration)) s" : "after \(fmt(duration)) s")\n"
        s += "  runs        \(repetitions) (seeds \(seeds.map(String.init).joined(separator: ", ")))\n"
        if faults.isEmpty { s += "  faults      none\n" } else {
            s += "  faults      (a final heal always runs)\n"
            for f in faults.sorted(by: { $0.at < $1.at }) {
                s += "    \(fmt(f.at).leftPad(6)) s  \(f.describe)" + (f.duration.map { ", \(f.action.healName) at \(fmt(f.at + $0)) s" } ?? ", until the end") + "\n"
            }
        }
        s += "  outputs     \(outputs.sorted().joined(separator: ", ")), summary.json, spec.yaml\n"
        return s
    }
}

func fmt(_ x: Double) -> String {
    x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(format: "%.3g", x)
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

extension ExperimentSpec {
    /// The policies a spec compares, one run (per seed) each: offload policies, or migration
    /// policies (one, the topology's, when the spec lists none).
    public var variants: [String] {
        if let o = workload.services?.offload, !o.isEmpty { return o }
        let listed = workload.services?.migration ?? []
        return listed.isEmpty ? [topology.coordinator.migrationPolicy] : listed
    }
    public var variantsAreOffload: Bool { !(workload.services?.offload.isEmpty ?? true) }

    /// A seed list typed on the command line that cannot be read.
    public struct SeedListError: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    /// A seed list as a user types it: "4", "1,2,3", "1-6" or "1-3,7"; each seed once, in order.
    public static func parseSeeds(_ text: String, option: String = "--seeds") throws -> [UInt64] {
        func bad(_ why: String) -> SeedListError { SeedListError(description: "\(option) '\(text)': \(why); write e.g. 1,2,3 or 1-6") }
        var out: [UInt64] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false).map({ $0.trimmingCharacters(in: .whitespaces) }) {
            guard !part.isEmpty else { throw bad("an empty item") }
            let ends = part.split(separator: "-", omittingEmptySubsequences: false)
            guard ends.count <= 2, let lo = UInt64(ends[0]), let hi = ends.count == 2 ? UInt64(ends[1]) : lo else { throw bad("'\(part)' is not a seed or a range of seeds") }
            guard lo <= hi else { throw bad("the range \(part) runs backwards") }
            guard hi - lo < 100 else { throw bad("the range \(part) holds over 100 seeds") }
            for seed in lo...hi {
                guard !out.contains(seed) else { throw bad("seed \(seed) is named twice") }
                out.append(seed)
            }
        }
        guard out.count <= 100 else { throw bad("over 100 seeds") }
        return out
    }

    /// The command line's overrides of a spec: `repetitions` runs of each policy (seeds counting
    /// up from the spec's first, or each of `seeds` that many times), and only `policies` of those
    /// the spec compares. A policy claim needs the run-to-run spread, and repeating all of a spec's
    /// policies is often more than the question needs.
    public mutating func override(repetitions: Int?, policies: [String]?, seeds chosen: [UInt64]? = nil) throws {
        if let n = repetitions {
            guard (1...100).contains(n) else {
                throw SpecError(file: file, line: 0, field: "--repetitions", message: "\(n) runs: give 1 to 100")
            }
        }
        if let list = chosen {
            // Each seed run `repetitions` times (once without it), seeds in the order given.
            let n = repetitions ?? 1
            guard list.count * n <= 100 else {
                throw SpecError(file: file, line: 0, field: "--seeds", message: "\(list.count) seeds × \(n) runs: give at most 100 runs")
            }
            seeds = list.flatMap { Array(repeating: $0, count: n) }
            self.repetitions = seeds.count
        } else if let n = repetitions {
            let first = seeds.first ?? 1
            self.repetitions = n
            seeds = (0..<n).map { first &+ UInt64($0) }
        }
        if let wanted = policies {
            let known = variants
            let unknown = wanted.filter { !known.contains($0) }
            guard !wanted.isEmpty, unknown.isEmpty, Set(wanted).count == wanted.count else {
                let what = wanted.isEmpty ? "no policy given" : unknown.isEmpty ? "a policy is named twice" : "\(unknown.joined(separator: ", ")) not compared by this spec"
                throw SpecError(file: file, line: 0, field: "--policies", message: "\(what); the spec compares \(known.joined(separator: ", "))")
            }
            if variantsAreOffload { workload.services?.offload = wanted } else if workload.services != nil {
                workload.services?.migration = wanted
            }
            if !variantsAreOffload { topology.coordinator.migrationPolicy = wanted[0] }
        }
    }

    /// The topology one variant's runs start: the coordinator set to that policy.
    public func topology(forVariant policy: String) -> Topology {
        var t = topology
        if variantsAreOffload { t.coordinator.offloadPolicy = policy } else { t.coordinator.migrationPolicy = policy }
        return t
    }
}
