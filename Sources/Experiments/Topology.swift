import Cluster
import Foundation
import MemoryAgent
import Protocol
import Scheduling
import Wire

/// A testbed topology: one coordinator and the nodes to start, as read from TOPOLOGY.yaml.
public struct Topology: Equatable {
    public enum Security: String, Equatable { case curve, open }

    public struct CoordinatorSpec: Equatable {
        public var endpoint = "tcp://127.0.0.1:7700"
        public var heartbeatMs = 200
        public var suspectAfterMs = 1000
        public var deadAfterMs = 2000
        /// Scheduling policy for offline jobs and trace seconds per wall second.
        public var policy = "hybrid"
        public var timeScale = 1.0
        /// Live migration of inference requests: the policy (`none`, `llumnix`, `slack`) and method
        /// (`live`, `blocking`, `recompute`); the real bytes replicas hold per KV block (nil: the
        /// coordinator's default).
        public var migrationPolicy = "none"
        public var migrationMethod = "live"
        /// Stage a migration's KV on a memory host when the destination has no room yet.
        public var migrationStaging = false
        public var kvBytesScale: Double? = nil
        /// The emulated link KV caches cross between GPU nodes, for their real size (nil: the
        /// coordinator's default).
        public var kvLink: String? = nil
        /// What lives where in the memory hosts' tiers (`none`, `dram`, `cxl`, `nvme`, `tiered`) and
        /// the emulated link between GPU agents and memory hosts (nil: the coordinator's defaults).
        public var offloadPolicy: String? = nil
        public var tierLink: String? = nil
        /// Where players render (`local`, `edge`, `cloud`, `scripted`, `adaptive`) and the scripted
        /// switches (`AT_SECONDS PLAYER PLACE`); nil: the coordinator's default.
        public var renderPolicy: String? = nil
        public var renderScript: [String] = []
    }

    public enum NodeSpec: Equatable {
        case gpu(model: String, count: Int)
        case memory(tiers: [MemoryHost.TierSpec])
        case render(slots: Int, gpuModel: String)
        case world(tickHz: Double, entities: Int, seed: Int)
        case player(PlayerSpec)
    }

    /// Players of one process: device profiles spread over them, a behaviour, a network class.
    public struct PlayerSpec: Equatable {
        public var devices: [String]
        public var behaviours: [String] = ["random-walk"]
        /// nil: each device's own class.
        public var network: String?
        public var viewDistance = 8
        public var otherLoad = 0.2
        public var dockAfter: Double?
        public var battery = 1.0
        public init(devices: [String]) { self.devices = devices }
    }

    public struct Node: Equatable {
        public var id: String
        public var kind: NodeKind
        public var siteName: String
        public var siteKind: SiteKind
        public var labels: [String: String]
        public var spec: NodeSpec
        /// Number of virtual nodes this process hosts (ids `<id>-0` … when above 1).
        public var virtual: Int
        public var line: Int
        /// GPU nodes: run jobs as real processes with this command (the process backend) instead
        /// of emulating them.
        public var jobCommand: String? = nil
    }

    public var name: String
    public var file: String
    public var security: Security
    public var coordinator: CoordinatorSpec
    public var nodes: [Node]
    /// Emulated conditions of the link between each site's nodes and the coordinator, by site name
    /// (the `network:` section); sites not named have a perfect link.
    public var network: [String: NetworkConditions] = [:]

    /// Every node id the testbed will have (virtual ones expanded).
    public var nodeIDs: [String] { nodes.flatMap(nodeIDs(of:)) }

    /// The node ids one agent process hosts (its id, or id-0 … id-(N-1) with `virtual: N`).
    public func nodeIDs(of n: Node) -> [String] { n.virtual > 1 ? (0..<n.virtual).map { "\(n.id)-\($0)" } : [n.id] }

    public static func load(file: String) throws -> Topology {
        try parse(YAMLValue.load(file: file))
    }

    public static func parse(_ text: String, file: String = "<string>") throws -> Topology {
        try parse(YAMLValue.parse(text, file: file))
    }

    static func parse(_ root: YAMLValue) throws -> Topology {
        let top = try root.mapping(allowed: ["name", "description", "security", "coordinator", "nodes", "network"])
        var t = Topology(name: try top["name"]?.string() ?? "testbed", file: root.file, security: .curve,
                         coordinator: CoordinatorSpec(), nodes: [])
        if let s = top["security"] {
            guard let sec = Security(rawValue: try s.string()) else { throw s.fail("expected 'curve' or 'open'") }
            t.security = sec
        }
        if let c = top["coordinator"] {
            let m = try c.mapping(allowed: ["endpoint", "heartbeat_ms", "suspect_after_ms", "dead_after_ms", "policy", "time_scale",
                                            "migration_policy", "migration_method", "migration_staging", "kv_bytes_scale", "kv_link", "offload_policy", "tier_link",
                                            "render_policy", "render_script"])
            if let v = m["render_script"] { t.coordinator.renderScript = try v.sequence().map { try $0.string() } }
            if let v = m["render_policy"] {
                let p = try v.string()
                do { _ = try RenderPolicies.named(p, script: t.coordinator.renderScript) } catch { throw v.fail("\(error)") }
                t.coordinator.renderPolicy = p
            }
            if let v = m["offload_policy"] {
                let p = try v.string()
                guard OffloadPolicies.named(p) != nil else { throw v.fail("unknown offload policy '\(p)' (known: \(OffloadPolicies.names.joined(separator: ", ")))") }
                t.coordinator.offloadPolicy = p
            }
            if let v = m["tier_link"] {
                let x = try v.string()
                let bw: Double?
                do { bw = try NetworkConditions.parseBandwidth(x) } catch { throw v.fail("tier_link: \(error)") }
                guard bw != nil else { throw v.fail("tier_link must be a bandwidth like 100gbit") }
                t.coordinator.tierLink = x
            }
            if let v = m["kv_link"] {
                let x = try v.string()
                if x != "0" { do { _ = try NetworkConditions.parseBandwidth(x) } catch { throw v.fail("kv_link: \(error)") } }
                t.coordinator.kvLink = x
            }
            if let v = m["migration_policy"] {
                let p = try v.string()
                guard MigrationPolicies.named(p) != nil else { throw v.fail("unknown migration policy '\(p)' (known: \(MigrationPolicies.names.joined(separator: ", ")))") }
                t.coordinator.migrationPolicy = p
            }
            if let v = m["migration_method"] {
                let x = try v.string()
                guard ["live", "blocking", "recompute"].contains(x) else { throw v.fail("migration_method '\(x)' must be live, blocking or recompute") }
                t.coordinator.migrationMethod = x
            }
            if let v = m["migration_staging"] { t.coordinator.migrationStaging = try v.bool() }
            if let v = m["kv_bytes_scale"] {
                let x = try v.double()
                guard x >= 0 && x <= 1 else { throw v.fail("kv_bytes_scale \(x) must be within 0 … 1") }
                t.coordinator.kvBytesScale = x
            }
            if let v = m["policy"] {
                let p = try v.string()
                guard Policies.named(p) != nil else { throw v.fail("unknown policy '\(p)' (known: \(Policies.names.joined(separator: ", ")))") }
                t.coordinator.policy = p
            }
            if let v = m["time_scale"] {
                let x = try v.double()
                guard x > 0 && x <= 1_000_000 else { throw v.fail("time_scale \(x) must be > 0 and ≤ 1000000") }
                t.coordinator.timeScale = x
            }
            if let e = m["endpoint"] {
                let ep = try e.string()
                guard ep.hasPrefix("tcp://") || ep.hasPrefix("ipc://") else { throw e.fail("endpoint '\(ep)' must start with tcp:// or ipc://") }
                t.coordinator.endpoint = ep
            }
            if let v = m["heartbeat_ms"] { t.coordinator.heartbeatMs = try v.int(in: 10...60_000) }
            if let v = m["suspect_after_ms"] { t.coordinator.suspectAfterMs = try v.int(in: 50...600_000) }
            if let v = m["dead_after_ms"] {
                t.coordinator.deadAfterMs = try v.int(in: 100...600_000)
                if t.coordinator.deadAfterMs <= t.coordinator.suspectAfterMs {
                    throw v.fail("dead_after_ms (\(t.coordinator.deadAfterMs)) must exceed suspect_after_ms (\(t.coordinator.suspectAfterMs))")
                }
            }
            if t.coordinator.suspectAfterMs <= t.coordinator.heartbeatMs {
                throw c.fail("suspect_after_ms (\(t.coordinator.suspectAfterMs)) must exceed heartbeat_ms (\(t.coordinator.heartbeatMs))")
            }
        }
        guard let nodes = top["nodes"] else { throw root.fail("missing 'nodes': a topology needs at least one node") }
        var seen = Set<String>()
        for n in try nodes.sequence() {
            let node = try parseNode(n)
            let ids = node.virtual > 1 ? (0..<node.virtual).map { "\(node.id)-\($0)" } : [node.id]
            for id in ids where !seen.insert(id).inserted {
                throw n.fail("node id '\(id)' is used twice")
            }
            t.nodes.append(node)
        }
        if t.nodes.isEmpty { throw nodes.fail("the list is empty: a topology needs at least one node") }
        if let n = top["network"] { t.network = try parseNetwork(n, sites: Set(t.nodes.map(\.siteName))) }
        return t
    }

    /// `network: {SITE: {latency_ms: 20, jitter_ms: 5, loss: 0.001, bandwidth: 100mbit}, …}`.
    static func parseNetwork(_ value: YAMLValue, sites: Set<String>) throws -> [String: NetworkConditions] {
        guard case .mapping(let entries) = value.node else {
            throw value.fail("expected a mapping of site names to conditions, found \(value.kindName)")
        }
        var out: [String: NetworkConditions] = [:]
        for (k, node) in entries {   // in file order, so the first mistake is the one reported
            guard case .scalar(let name) = k else { throw value.fail("site names must be plain strings") }
            let site = name.string
            let key = YAMLValue(node: k, file: value.file, path: "network.\(site)")
            let v = YAMLValue(node: node, file: value.file, path: "network.\(site)")
            guard sites.contains(site) else {
                throw key.fail("unknown site '\(site)': no node is at it (sites: \(sites.sorted().joined(separator: ", ")))")
            }
            if out[site] != nil { throw key.fail("site '\(site)' appears twice") }
            let m = try v.mapping(allowed: ["latency_ms", "jitter_ms", "loss", "bandwidth"])
            var c = NetworkConditions.none
            func parse<T>(_ key: String, _ read: (String) throws -> T) throws -> T? {
                guard let x = m[key] else { return nil }
                do { return try read(try x.string()) } catch let e as NetworkConditions.ParseError { throw x.fail(e.description) }
            }
            c.delayMs = try parse("latency_ms") { try NetworkConditions.parseDuration($0, what: "latency_ms") } ?? 0
            c.jitterMs = try parse("jitter_ms") { try NetworkConditions.parseDuration($0, what: "jitter_ms") } ?? 0
            c.loss = try parse("loss", NetworkConditions.parseLoss) ?? 0
            c.bandwidthBytesPerSecond = try parse("bandwidth", NetworkConditions.parseBandwidth) ?? nil
            out[site] = c
        }
        return out
    }

    static func parseNode(_ n: YAMLValue) throws -> Node {
        let m = try n.mapping(allowed: ["id", "kind", "site", "labels", "gpu", "tiers", "render", "virtual", "world", "player"])
        guard let idValue = m["id"] else { throw n.fail("missing 'id'") }
        let id = try idValue.string()
        guard !id.isEmpty, id.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw idValue.fail("node id '\(id)' may hold only letters, digits, '-', '_' and '.'")
        }
        guard let kindValue = m["kind"] else { throw n.fail("missing 'kind' (gpu, memory, render, world or player)") }
        let kindName = try kindValue.string()
        var siteName = "cloud", siteKind = SiteKind.cloud
        if let s = m["site"] {
            if case .scalar = s.node {
                siteName = try s.string()
                guard let k = SiteKind(name: siteName) else { throw s.fail("site '\(siteName)' must be cloud, edge or device (or a mapping with name and kind)") }
                siteKind = k
            } else {
                let sm = try s.mapping(allowed: ["name", "kind"])
                siteName = try sm["name"]?.string() ?? "cloud"
                let kindText = try sm["kind"]?.string() ?? "cloud"
                guard let k = SiteKind(name: kindText) else { throw (sm["kind"] ?? s).fail("site kind '\(kindText)' must be cloud, edge or device") }
                siteKind = k
            }
        }
        let labels = try m["labels"]?.stringMap() ?? [:]
        let virtual = try m["virtual"]?.int(in: 1...10_000) ?? 1
        let kind: NodeKind
        let spec: NodeSpec
        var jobCommand: String?
        switch kindName {
        case "gpu":
            kind = .gpu
            guard let g = m["gpu"] else { throw n.fail("a gpu node needs 'gpu: {model: …, count: …}'") }
            let gm = try g.mapping(allowed: ["model", "count", "job_command"])
            if let c = gm["job_command"] {
                jobCommand = try c.string()
                if jobCommand!.trimmingCharacters(in: .whitespaces).isEmpty { throw c.fail("job_command is empty") }
            }
            guard let modelValue = gm["model"] else { throw g.fail("missing 'model'") }
            let model = try modelValue.string()
            guard GPUCatalog.model(named: model) != nil else {
                throw modelValue.fail("unknown GPU model '\(model)'; known: \(GPUCatalog.names.joined(separator: ", "))")
            }
            spec = .gpu(model: model, count: try gm["count"]?.int(in: 1...64) ?? 1)
        case "memory":
            kind = .memory
            guard let tiersValue = m["tiers"] else { throw n.fail("a memory node needs 'tiers: [dram:4GiB, …]'") }
            var tiers: [MemoryHost.TierSpec] = []
            for tv in try tiersValue.sequence() {
                do { tiers.append(try MemoryHost.TierSpec.parse(try tv.string())) } catch let e as MemoryHost.SpecError {
                    throw tv.fail(e.description)
                }
            }
            if tiers.isEmpty { throw tiersValue.fail("needs at least one tier") }
            spec = .memory(tiers: tiers)
        case "render":
            kind = .render
            guard siteKind == .edge || siteKind == .cloud else { throw n.fail("a render site must be at an edge or cloud site") }
            let rm = try m["render"]?.mapping(allowed: ["slots", "gpu"]) ?? [:]
            let gpu = try rm["gpu"]?.string() ?? "L4"
            guard GPUCatalog.model(named: gpu) != nil else { throw (rm["gpu"] ?? n).fail("unknown GPU model '\(gpu)'") }
            spec = .render(slots: try rm["slots"]?.int(in: 1...4096) ?? 8, gpuModel: gpu)
        case "world":
            kind = .world
            let wm = try m["world"]?.mapping(allowed: ["tick_hz", "entities", "seed"]) ?? [:]
            let hz = try wm["tick_hz"]?.double() ?? 20
            guard hz >= 1 && hz <= 1000 else { throw wm["tick_hz"]!.fail("tick_hz \(hz) must be within 1 … 1000") }
            spec = .world(tickHz: hz, entities: try wm["entities"]?.int(in: 0...100_000) ?? 64, seed: try wm["seed"]?.int(in: 0...Int(Int32.max)) ?? 1)
        case "player":
            kind = .player
            guard let pv = m["player"] else { throw n.fail("a player node needs 'player: {device: phone, …}'") }
            spec = .player(try parsePlayer(pv))
        default:
            throw kindValue.fail("unknown kind '\(kindName)'; expected gpu, memory, render, world or player")
        }
        for (key, belongs) in [("gpu", "gpu"), ("tiers", "memory"), ("render", "render"), ("world", "world"), ("player", "player")] where m[key] != nil && kindName != belongs {
            throw m[key]!.fail("'\(key)' belongs to \(belongs) nodes, not \(kindName) nodes")
        }
        return Node(id: id, kind: kind, siteName: siteName, siteKind: siteKind, labels: labels, spec: spec,
                    virtual: virtual, line: n.node.mark?.line ?? 0, jobCommand: jobCommand)
    }

    /// `player: {device: phone | [phone, laptop], behaviour: random-walk, network: 5g, view_distance: 8,
    /// other_load: 0.2, dock_after: 60s, battery: 1}`.
    static func parsePlayer(_ v: YAMLValue) throws -> PlayerSpec {
        let m = try v.mapping(allowed: ["device", "behaviour", "network", "view_distance", "other_load", "dock_after", "battery"])
        func names(_ key: String, known: [String], check: (String) -> Bool) throws -> [String]? {
            guard let x = m[key] else { return nil }
            let list: [String]
            if case .scalar = x.node { list = [try x.string()] } else { list = try x.sequence().map { try $0.string() } }
            for name in list where !check(name) { throw x.fail("unknown \(key) '\(name)' (known: \(known.joined(separator: ", ")))") }
            if list.isEmpty { throw x.fail("\(key) is empty") }
            return list
        }
        guard let devices = try names("device", known: DeviceCatalog.deviceNames, check: { DeviceCatalog.device(named: $0) != nil }) else {
            throw v.fail("missing 'device' (\(DeviceCatalog.deviceNames.joined(separator: ", ")))")
        }
        var p = PlayerSpec(devices: devices)
        if let b = try names("behaviour", known: ["idle", "random-walk", "explore", "build"], check: { ["idle", "random-walk", "explore", "build"].contains($0) }) { p.behaviours = b }
        if let x = m["network"] {
            let n = try x.string()
            guard DeviceCatalog.network(named: n) != nil else { throw x.fail("unknown network class '\(n)' (known: \(DeviceCatalog.networkNames.joined(separator: ", ")))") }
            p.network = n
        }
        if let x = m["view_distance"] { p.viewDistance = try x.int(in: 2...32) }
        if let x = m["other_load"] {
            p.otherLoad = try x.double()
            guard (0...0.9).contains(p.otherLoad) else { throw x.fail("other_load \(p.otherLoad) must be within 0 … 0.9") }
        }
        if let x = m["dock_after"] { p.dockAfter = try ExperimentSpec.seconds(x) }
        if let x = m["battery"] {
            p.battery = try x.double()
            guard (0...1).contains(p.battery) else { throw x.fail("battery \(p.battery) must be within 0 … 1") }
        }
        return p
    }

    /// The `strato agent …` arguments that start this node.
    /// With `netControlDirectory`, the agent follows `<dir>/<node id>.json` (see `--net-control`).
    /// With `container` (a generated compose file, see `ComposeFile`), the paths and addresses are
    /// the image's: the coordinator by its service name, keys under /run/secrets (the node's own
    /// pair mounted as agent.key), data and NVMe paths inside the container, and the data plane
    /// bound on every interface, advertised under the node's hostname.
    public func agentArguments(for node: Node, keysDirectory: String?, nvmeRoot: String,
                               netControlDirectory: String? = nil, container: ComposeFile.Layout? = nil) -> [String] {
        let command: [String]
        switch node.kind {
        case .world: command = ["game", "server"]
        case .player: command = ["client", "player"]
        default: command = ["agent", node.kind.name]
        }
        var args = command + ["--id", node.id, "--site", node.siteKind.name, "--site-name", node.siteName,
                    "--endpoint", container?.agentEndpoint ?? coordinator.endpoint, "--heartbeat-ms", "\(coordinator.heartbeatMs)",
                    "--coordinator-timeout-ms", "\(coordinator.deadAfterMs)"]
        if let k = keysDirectory {
            args += ["--keys", k]
            // Its own key pair when the directory has one (the testbed writes one per process).
            let own = KeyDirectory(path: k).agentKeyFile(node.id)
            if container == nil, FileManager.default.fileExists(atPath: own) { args += ["--client-key", own] }
        }
        if node.virtual > 1 { args += ["--virtual", "\(node.virtual)"] }
        for (k, v) in node.labels.sorted(by: { $0.key < $1.key }) { args += ["--label", "\(k)=\(v)"] }
        switch node.spec {
        case let .gpu(model, count):
            args += ["--gpu-model", model, "--gpus", "\(count)"]
            // In the image STRATO_DATA names the seed data.
            if container == nil { args += ["--data", DataPaths.dataDirectory()] }
            if let c = node.jobCommand { args += ["--backend", "process", "--job-command", c, "--job-dir", (nvmeRoot as NSString).deletingLastPathComponent + "/jobs"] }
        case let .memory(tiers):
            for t in tiers {
                // A container writes only under its own /var/lib/strato: a host path would not be there.
                let path = t.kind == .nvme ? (t.path.isEmpty || container != nil ? "\(nvmeRoot)/\(node.id)" : t.path) : ""
                args += ["--tier", "\(t.kind.name):\(t.capacityBytes)" + (path.isEmpty ? "" : ":\(path)")]
            }
        case let .render(slots, gpu): args += ["--slots", "\(slots)", "--render-gpu", gpu]
        case let .world(hz, entities, seed): args += ["--tick-hz", "\(hz)", "--entities", "\(entities)", "--seed", "\(seed)"]
        case let .player(p):
            args += ["--device", p.devices.joined(separator: ","), "--behaviour", p.behaviours.joined(separator: ","),
                     "--view-distance", "\(p.viewDistance)", "--other-load", "\(p.otherLoad)", "--battery", "\(p.battery)"]
            if let n = p.network { args += ["--network", n] }
            if let d = p.dockAfter { args += ["--dock-after", "\(d)"] }
        }
        if let c = network[node.siteName], !c.isNone {
            func text(_ v: Double) -> String { v == v.rounded() && abs(v) < 1e15 ? "\(Int64(v))" : "\(v)" }
            if c.delayMs > 0 { args += ["--net-delay-ms", text(c.delayMs)] }
            if c.jitterMs > 0 { args += ["--net-jitter-ms", text(c.jitterMs)] }
            if c.loss > 0 { args += ["--net-loss", "\(c.loss)"] }
            if let b = c.bandwidthBytesPerSecond { args += ["--net-bandwidth", NetworkConditions.bandwidthArgument(b)] }
        }
        if let d = netControlDirectory { args += ["--net-control", "\(d)/\(node.id).json"] }
        if let c = container { args += ["--data-endpoint", c.dataEndpoint, "--data-advertise-host", node.id] }
        return args
    }

    public func coordinatorArguments(stateDirectory: String, keysDirectory: String?, container: ComposeFile.Layout? = nil) -> [String] {
        var args = ["coordinator", "--endpoint", container?.coordinatorBind ?? coordinator.endpoint, "--state-dir", stateDirectory,
                    "--heartbeat-ms", "\(coordinator.heartbeatMs)", "--suspect-after-ms", "\(coordinator.suspectAfterMs)",
                    "--dead-after-ms", "\(coordinator.deadAfterMs)", "--policy", coordinator.policy,
                    "--time-scale", "\(coordinator.timeScale)"]
        if container == nil { args += ["--data", DataPaths.dataDirectory()] }
        args += ["--migration-policy", coordinator.migrationPolicy, "--migration-method", coordinator.migrationMethod]
        if coordinator.migrationStaging { args.append("--migration-staging") }
        if let x = coordinator.kvBytesScale { args += ["--kv-bytes-scale", "\(x)"] }
        if let x = coordinator.kvLink { args += ["--kv-link", x] }
        if let x = coordinator.offloadPolicy { args += ["--offload-policy", x] }
        if let x = coordinator.tierLink { args += ["--tier-link", x] }
        if let x = coordinator.renderPolicy { args += ["--render-policy", x] }
        for x in coordinator.renderScript { args += ["--render-script", x] }
        if let k = keysDirectory { args += ["--keys", k] }
        return args
    }
}
