import Cluster
import Coordinator
import Foundation
import Protocol
import Scheduling

/// How the coordinator migrates: the policy, the method, and the limits every migration runs under.
public struct MigrationSettings: Sendable {
    /// `none`, `dispatch`, `llumnix` or `slack` (`MigrationPolicies`).
    public var policy = "none"
    public var method = MigrationMethod.live
    /// The stall the final stage may add to a request (trace seconds).
    public var downtimeBudget = 0.02
    public var stageCap = 8
    /// Wall seconds between policy rounds.
    public var interval = 0.25
    /// Migrations in flight at once, in all; each replica is the source or destination of one at a time.
    public var maxConcurrent = 4
    /// Wall seconds after which a migration nobody reports on is given up (its request waits again).
    public var giveUpAfter = 60.0
    /// The emulated link KV caches cross between GPU nodes, in bytes of real (unscaled) KV per
    /// second: 25 Gbit/s, the network of a mid-size cloud GPU instance (e.g. AWS g5.8xlarge, one
    /// A10G). Replicas hold KV at `kv_bytes_scale`, so the data plane moves fewer bytes than the
    /// real cache has; each transfer then takes at least the time the real bytes need on this
    /// link. 0: as fast as the data plane moves the scaled bytes.
    public var kvLinkBytesPerSecond = 25e9 / 8
    /// A destination with no room does not end a migration while a memory host is alive: the
    /// request's KV is staged there until the destination has room (and drains may pick a full
    /// destination). Off by default: the moves then wait for room, as in Llumnix.
    public var staging = false
    public init() {}
}

/// Feature "migration", coordinator side: decides which running requests move where (the policy
/// over the replicas' load reports, an operator's `strato request migrate`, a drained node's
/// replicas emptied), records each migration durably before the source is told, applies both
/// sides' outcomes to the request router (the request belongs to exactly one replica: the source
/// until the migration commits, the destination after), and resolves a copy whose source died by
/// resuming the request on the destination from the KV that arrived.
///
/// Shares the inference feature's `RequestRouter` through the scheduling controller, which is
/// registered before it. Called by the coordinator shell on its loop thread.
public final class MigrationController: CoordinatorFeature {
    public let features = [MigrationHandler.feature]
    public static let storeSchema = ["CREATE TABLE IF NOT EXISTS migrations (id TEXT PRIMARY KEY, state TEXT NOT NULL, record BLOB NOT NULL)"]
    public var storeSchema: [String] { Self.storeSchema }

    public let settings: MigrationSettings
    let policy: MigrationPolicy
    private let scheduling: SchedulingController
    private var jobs: JobManager { scheduling.jobs }
    private var router: RequestRouter { scheduling.jobs.requests }

    /// Latest load per replica: the report, its node, when it came (coordinator wall nanos).
    private struct Load { var report: InstanceLoadReport; var node: String; var at: Int64 }
    private var loads: [String: Load] = [:]
    private var records: [String: MigrationRecord] = [:]
    private var order: [String] = []
    private var nextNumber = 1
    private var lastRound: Int64 = 0
    /// When each in-flight migration was last heard of (coordinator wall nanos).
    private var lastNews: [String: Int64] = [:]
    /// Resolve commands sent, per migration (sent once).
    private var resolving = Set<String>()
    private var dirty = Set<String>()
    /// Measured KV-path bandwidth (the sources' stages), smoothed: what plans the next migrations.
    private(set) var bandwidth: Double?

    public init(scheduling: SchedulingController, settings: MigrationSettings) throws {
        guard let p = MigrationPolicies.named(settings.policy) else {
            throw UnknownPolicy(name: settings.policy, known: MigrationPolicies.names)
        }
        self.scheduling = scheduling
        self.settings = settings
        self.policy = p
    }

    static let live = Set(["in-flight", "orphaned"])

    // MARK: Start

    public func start(_ s: CoordinatorServices, restoredNodes: [NodeRecord]) throws {
        router.dispatch = policy.dispatchesByFreeness ? .freeness : .shortestQueue
        // Scale-down empties a replica by migration when the policy migrates.
        jobs.scheduler.retireByMigration = policy.migrates
        for row in try s.store.database.run("SELECT id, record FROM migrations ORDER BY rowid") {
            guard let r = try? MigrationRecord(serializedBytes: row[1].blob) else { continue }
            records[r.migrationID] = r
            order.append(r.migrationID)
            if let n = Int(r.migrationID.split(separator: "-").last ?? "") { nextNumber = max(nextNumber, n + 1) }
            if Self.live.contains(r.state) {
                router.migrationStarted(r.requestID, to: r.toReplica)
                lastNews[r.migrationID] = s.clock.wallNanos()
            }
        }
    }

    // MARK: Reports

    public func reports(_ reports: [FeatureReport], feature: String, from nodeID: String, clockOffsetNanos: Int64, _ s: CoordinatorServices) -> [String] {
        var settled: [String] = []
        for r in reports {
            if r.key.hasPrefix("load/") {
                if let l = try? InstanceLoadReport(serializedBytes: r.body) {
                    loads[l.replicaID] = Load(report: l, node: nodeID, at: s.clock.wallNanos())
                    // Llumnix's dispatching reads the same reports.
                    if policy.dispatchesByFreeness {
                        router.updateKV(l.replicaID, freeBlocks: Int(l.totalBlocks) - Int(l.usedBlocks) - max(Int(l.waitingDemand), Int(l.headOfQueueDemand)), running: l.running.count)
                    }
                } else { s.count("malformed_migration_reports") }
                settled.append(r.key)
                continue
            }
            guard let m = try? MigrationReport(serializedBytes: r.body) else { s.count("malformed_migration_reports"); settled.append(r.key); continue }
            apply(m, from: nodeID, offset: clockOffsetNanos, s)
            settled.append(r.key)
        }
        persist(s)
        return settled
    }

    private func apply(_ m: MigrationReport, from node: String, offset: Int64, _ s: CoordinatorServices) {
        guard var r = records[m.migrationID] else { s.count("migration_reports_unknown"); return }
        lastNews[r.migrationID] = s.clock.wallNanos()
        let ended = jobs.traceNow(wall: m.endedUnixNanos + offset)
        switch m.role {
        case .source:
            r.sourceOutcome = m.outcome
            r.stages = m.stages; r.bytes = max(r.bytes, m.bytes); r.blocks = max(r.blocks, m.blocks); r.tokens = m.tokens
            r.copySeconds = m.copySeconds
            if m.measuredBytesPerSecond > 0 { bandwidth = bandwidth.map { 0.7 * $0 + 0.3 * m.measuredBytesPerSecond } ?? m.measuredBytesPerSecond }
            switch m.outcome {
            case "done":
                if m.staged { r.staged = true; r.detail = m.detail }
                if Self.live.contains(r.state) { router.moved(r.requestID, to: r.toReplica, node: r.toNode) }
                if r.state == "in-flight" { r.state = "done"; r.ended = ended }
            default:   // aborted, or resumed here after the destination failed: it stays on the source
                if r.state == "in-flight" {
                    r.state = "aborted"; r.ended = ended; r.detail = m.detail
                    router.migrationEnded(r.requestID)
                } else if r.state == "orphaned" {
                    r.detail = m.detail
                }
            }
        case .destination:
            r.destinationOutcome = m.outcome
            if m.staged { r.staged = true }
            if m.downtimeSeconds >= 0 { r.downtimeSeconds = m.downtimeSeconds; r.normalTbtSeconds = m.normalTbtSeconds }
            r.bytes = max(r.bytes, m.bytes); r.blocks = max(r.blocks, m.blocks)
            switch m.outcome {
            case "committed", "resumed-partial":
                if Self.live.contains(r.state) {
                    router.moved(r.requestID, to: r.toReplica, node: r.toNode)
                    r.state = m.outcome == "committed" ? "done" : "resumed-partial"
                    r.ended = ended
                }
            case "orphaned":
                if r.state == "in-flight" { r.state = "orphaned"; r.detail = m.detail }
            default:   // released, dropped: the destination holds nothing of it
                if r.state == "orphaned" || (r.state == "in-flight" && resolving.contains(r.migrationID)) {
                    r.state = "aborted"; r.ended = ended; r.detail = m.detail
                    router.migrationEnded(r.requestID)
                }
            }
        default:
            s.count("malformed_migration_reports")
            return
        }
        if !Self.live.contains(r.state) { lastNews[r.migrationID] = nil; resolving.remove(r.migrationID) }
        save(r)
        s.event(node, "migration", "\(r.migrationID) \(r.requestID) \(r.fromNode)→\(r.toNode): \(m.role == .source ? "source" : "destination") \(m.outcome)\(m.detail.isEmpty ? "" : ": " + m.detail)")
    }

    public func acknowledged(_ command: Command, _ feature: FeatureCommand, ack: CommandAck, _ s: CoordinatorServices) {
        guard !ack.ok, let c = try? MigrationCommand(serializedBytes: feature.body) else { return }
        let id: String
        switch c.action {
        case .migrate(let m)?: id = m.migrationID
        case .resolve(let r)?: id = r.migrationID
        case nil: return
        }
        guard var r = records[id], Self.live.contains(r.state) else { return }
        // The source would not start it (the request finished or moved meanwhile), or the
        // destination holds nothing to resume: the request is where the router has it, or waits again.
        r.state = "aborted"; r.detail = "\(command.nodeID) refused: \(ack.detail)"; r.ended = jobs.traceNow(wall: s.clock.wallNanos())
        router.migrationEnded(r.requestID)
        lastNews[id] = nil
        save(r)
        persist(s)
        s.event(command.nodeID, "migration", "\(id) refused: \(ack.detail)")
    }

    public func nodeDead(_ nodeID: String, _ s: CoordinatorServices) {
        for (id, l) in loads where l.node == nodeID { loads[id] = nil }
    }

    // MARK: The loop

    public func turn(_ s: CoordinatorServices) -> Bool {
        guard scheduling.jobs != nil else { return false }
        let now = s.clock.wallNanos()
        var sent = resolveOrphans(s, now: now)
        closeDrainedReplicas(s)
        if now - lastRound >= Int64(settings.interval * 1e9) {
            lastRound = now
            sent = runPolicy(s, now: now) || sent
        }
        persist(s)
        return sent
    }

    public func nextDueWall() -> Int64? {
        guard policy.migrates || policy.dispatchesByFreeness || records.values.contains(where: { Self.live.contains($0.state) }) else { return nil }
        return lastRound + Int64(settings.interval * 1e9)
    }

    /// A migration whose source died resumes on its destination from the KV that arrived; one
    /// nobody has reported on for too long is given up (its request waits again).
    private func resolveOrphans(_ s: CoordinatorServices, now: Int64) -> Bool {
        var sent = false
        for id in order where Self.live.contains(records[id]!.state) {
            var r = records[id]!
            let sourceDead = s.membership.nodes[r.fromNode].map { $0.info.state == .dead } ?? true
            let destDead = s.membership.nodes[r.toNode].map { $0.info.state == .dead } ?? true
            if r.sourceOutcome.isEmpty && sourceDead && !destDead && !resolving.contains(id) {
                // The destination resumes it (or says it holds nothing, and the request waits again).
                let finished = router.records[r.requestID]?.finished != nil
                var rc = ResolveOrphan(); rc.migrationID = id; rc.resume = !finished
                rc.requestID = r.requestID; rc.destinationReplica = r.toReplica
                var mc = MigrationCommand(); mc.resolve = rc
                do { try s.enqueue(.feature(MigrationHandler.feature, node: r.toNode, mc)); resolving.insert(id); sent = true }
                catch { s.logger.error("could not persist a resolve command: \(error)") }
                s.event(r.toNode, "migration", "\(id): source \(r.fromNode) dead; \(finished ? "dropping" : "resuming") \(r.requestID) on \(r.toNode) from the KV that arrived")
            } else if r.state == "orphaned" && !r.sourceOutcome.isEmpty && !resolving.contains(id) {
                // The source is alive and kept (or finished) the request: the destination drops its copy.
                var rc = ResolveOrphan(); rc.migrationID = id; rc.resume = false
                var mc = MigrationCommand(); mc.resolve = rc
                do { try s.enqueue(.feature(MigrationHandler.feature, node: r.toNode, mc)); resolving.insert(id); sent = true }
                catch { s.logger.error("could not persist a resolve command: \(error)") }
            } else if (sourceDead && destDead) || now - (lastNews[id] ?? now) > Int64(settings.giveUpAfter * 1e9) {
                r.state = "aborted"; r.ended = jobs.traceNow(wall: now)
                r.detail = sourceDead && destDead ? "both nodes died mid-migration" : "no word from either node for \(Int(settings.giveUpAfter)) s"
                router.migrationEnded(r.requestID)
                lastNews[id] = nil
                save(r)
                s.event(r.fromNode, "migration", "\(id) given up: \(r.detail)")
            }
        }
        return sent
    }

    /// Replicas on drained nodes take no new requests; the policies drain them by migration.
    /// (Only the ones closed for a drain reopen: a retiring replica stays closed.)
    private var closedForDrain = Set<String>()
    private func closeDrainedReplicas(_ s: CoordinatorServices) {
        for (id, rep) in router.ready {
            let drained = s.membership.nodes[rep.node]?.info.drained ?? false
            if drained && !router.closed.contains(id) { router.setClosed(id, true); closedForDrain.insert(id) }
            if !drained && closedForDrain.remove(id) != nil { router.setClosed(id, false) }
        }
    }

    /// Busy: requests moving now, and replicas that are the source or destination of a migration.
    private var inFlight: [MigrationRecord] { records.values.filter { Self.live.contains($0.state) } }

    private func runPolicy(_ s: CoordinatorServices, now: Int64) -> Bool {
        let moving = inFlight
        guard moving.count < settings.maxConcurrent else { return false }
        let busyRequests = Set(moving.map(\.requestID))
        let busyReplicas = Set(moving.flatMap { [$0.fromReplica, $0.toReplica] })
        let traceNow = jobs.traceNow(wall: now)
        var decisions: [(MigrationDecision, String)] = []
        for service in Set(router.ready.values.map(\.service)).sorted() {
            let instances = router.ready.filter { $0.value.service == service }.keys.sorted().compactMap { id -> InstanceLoad? in
                guard let l = loads[id], now - l.at < 2_000_000_000, !busyReplicas.contains(id) else { return nil }
                return instance(id, l, s, traceNow: traceNow)
            }
            guard instances.count >= 2 else { continue }
            // Costs in real bytes over the KV link (trace seconds), as the real system would pay them.
            let full = loads[instances.first!.id]?.report.blockBytes ?? 0
            var costs = settings.kvLinkBytesPerSecond > 0 ? MigrationCosts(blockBytes: full, bandwidthBytesPerSecond: settings.kvLinkBytesPerSecond)
                : MigrationCosts(blockBytes: blockBytes(instances.first!.id), bandwidthBytesPerSecond: (bandwidth ?? 1e9) * jobs.timeScale)
            costs.staging = canStage(s)
            // A drained node's replicas are emptied whatever the policy: with `none`, by the drain
            // rule alone (Llumnix's, whose virtual usage is infinite on a draining instance).
            let chosen = !policy.migrates
                ? (instances.contains { $0.health == .draining } ? LlumnixMigration().decide(instances, costs: costs, busy: busyRequests).filter { $0.reason == .drain } : [])
                : policy.decide(instances, costs: costs, busy: busyRequests)
            decisions += chosen.map { ($0, service) }
            if s.logger.logLevel <= .debug {
                s.logger.debug("migration round t=\(String(format: "%.1f", traceNow)) \(Self.roundLine(instances, chosen))")
            }
        }
        var started = false
        var used = busyReplicas
        for (d, _) in decisions where inFlight.count < settings.maxConcurrent && !used.contains(d.from) && !used.contains(d.to) {
            do {
                try start(request: d.request, from: d.from, to: d.to, method: settings.method, reason: d.reason.rawValue, s)
                used.insert(d.from); used.insert(d.to)
                started = true
            } catch {
                // The policy decided on a report older than the router's view (the request finished
                // or moved since, the destination filled): counted, and decided afresh next round.
                s.count("migration_decisions_refused")
                s.logger.debug("migration decision \(d.request) \(d.from)→\(d.to) (\(d.reason.rawValue)) refused: \(error)")
            }
        }
        return started
    }

    /// Whether a migration may stage KV on a memory host: staging is on and one is alive.
    private func canStage(_ s: CoordinatorServices) -> Bool {
        settings.staging && s.membership.nodes.values.contains { $0.info.kind == .memory && $0.info.state == .alive && !$0.info.dataEndpoint.isEmpty }
    }

    private func blockBytes(_ replica: String) -> Double {
        guard let l = loads[replica] else { return 0 }
        return l.report.blockBytes * scheduling.kvBytesScale
    }

    /// A replica's load as the policies see it. A request's SLO slack: its SLO less the time since
    /// it arrived and its remaining tokens at its own pace so far.
    private func instance(_ id: String, _ l: Load, _ s: CoordinatorServices, traceNow: Double) -> InstanceLoad {
        let node = s.membership.nodes[l.node]
        let health: InstanceLoad.Health = (node?.info.drained ?? false) || router.closed.contains(id) ? .draining
            : node?.info.state == .suspect ? .suspect : .alive
        let running = l.report.running.map { q -> RequestLoad in
            var slack = Double.infinity
            if let rec = router.records[q.requestID], let slo = jobs.services[rec.request.serviceID]?.sloSeconds {
                let elapsed = max(0, traceNow - rec.request.arrival)
                let pace = elapsed / Double(max(1, q.generatedTokens))
                slack = slo - elapsed - Double(q.remainingTokens) * pace
            }
            return RequestLoad(id: q.requestID, blocks: Int(q.blocks), remainingTokens: Int(q.remainingTokens), highPriority: q.highPriority, sloSlack: slack)
        }
        return InstanceLoad(id: id, node: l.node, totalBlocks: Int(l.report.totalBlocks), usedBlocks: Int(l.report.usedBlocks),
                            headOfQueueDemand: Int(l.report.headOfQueueDemand), running: running, health: health)
    }

    /// One policy round as the policy saw it, for a debug log: each instance's blocks, queue head,
    /// running and high-priority requests and Llumnix freeness, and what was decided.
    static func roundLine(_ instances: [InstanceLoad], _ chosen: [MigrationDecision]) -> String {
        let llumnix = LlumnixMigration()
        var parts: [String] = []
        for i in instances {
            let hp = i.running.filter(\.highPriority).count
            let f = String(format: "%.1f", llumnix.freeness(i))
            parts.append("\(i.id)[\(i.usedBlocks)/\(i.totalBlocks) hoq \(i.headOfQueueDemand) run \(i.running.count) hp \(hp) f \(f)]")
        }
        let moves = chosen.map { "\($0.request) \($0.from)→\($0.to) \($0.reason.rawValue)" }
        return parts.joined(separator: " ") + " -> " + moves.joined(separator: ", ")
    }

    // MARK: Starting one

    public struct Refusal: Error, CustomStringConvertible { public let description: String }

    /// Records a migration durably and tells the source node. Throws, naming the problem, when it
    /// cannot be: an unknown or finished request, a destination that is unknown, dead, serves
    /// another model or lacks room.
    @discardableResult
    func start(request: String, from fromReplica: String?, to toReplica: String, method: MigrationMethod, reason: String, _ s: CoordinatorServices) throws -> MigrationRecord {
        guard let rec = router.records[request] else { throw Refusal(description: "no request '\(request)'") }
        guard rec.finished == nil else { throw Refusal(description: "request \(request) has finished") }
        guard router.migrating[request] == nil else { throw Refusal(description: "request \(request) is already moving (to \(router.migrating[request]!))") }
        guard let from = rec.replica, let fromNode = rec.node, router.ready[from] != nil else {
            throw Refusal(description: "request \(request) is waiting for a replica, not on one")
        }
        if let f = fromReplica, f != from { throw Refusal(description: "request \(request) is on \(from), not \(f)") }
        guard from != toReplica else { throw Refusal(description: "request \(request) is already on replica \(toReplica)") }
        guard let dest = router.ready[toReplica] else { throw Refusal(description: "replica \(toReplica) is not ready") }
        guard dest.service == rec.request.serviceID else {
            throw Refusal(description: "replica \(toReplica) serves \(dest.service), not \(rec.request.serviceID) (another model)")
        }
        guard let node = s.membership.nodes[dest.node], node.info.state == .alive else {
            throw Refusal(description: "node \(dest.node) is \(s.membership.nodes[dest.node].map { "\($0.info.state)" } ?? "unknown")")
        }
        guard !node.info.dataEndpoint.isEmpty else { throw Refusal(description: "node \(dest.node) has no data plane") }
        if let l = loads[toReplica], !canStage(s) {
            // Its KV so far (as its source last reported it) and a block to grow into.
            let held = loads[from]?.report.running.first { $0.requestID == request }.map { Int($0.blocks) }
            let need = (held ?? (rec.request.prefill + 15) / 16) + 1
            let free = Int(l.report.totalBlocks) - Int(l.report.usedBlocks)
            if need > free {
                throw Refusal(description: "replica \(toReplica) on \(dest.node) has \(free) free KV blocks; request \(request) needs \(need)"
                              + (settings.staging ? " (no memory host is alive to stage its KV on)" : " (with migration_staging on and a memory host, its KV would wait there for room)"))
            }
        }
        let id = "mig-\(nextNumber)"
        nextNumber += 1
        var r = MigrationRecord()
        r.migrationID = id; r.requestID = request; r.serviceID = rec.request.serviceID
        r.fromNode = fromNode; r.fromReplica = from; r.toNode = dest.node; r.toReplica = toReplica
        r.method = method.rawValue; r.reason = reason; r.state = "in-flight"
        r.started = jobs.traceNow(wall: s.clock.wallNanos()); r.ended = -1; r.downtimeSeconds = -1
        r.highPriority = rec.request.highPriority
        var m = MigrateRequest()
        m.migrationID = id; m.requestID = request; m.sourceReplica = from
        m.destinationNode = dest.node; m.destinationReplica = toReplica
        m.destinationEndpoint = node.info.dataEndpoint; m.destinationPublicKey = node.info.dataPublicKey
        m.method = method.rawValue; m.downtimeBudgetSeconds = settings.downtimeBudget; m.stageCap = UInt32(settings.stageCap)
        m.kvLinkBytesPerSecond = settings.kvLinkBytesPerSecond
        // Held bytes per wall second: what the stages measured lately, else what the emulated link allows.
        m.bandwidthBytesPerSecond = bandwidth ?? (settings.kvLinkBytesPerSecond > 0 ? settings.kvLinkBytesPerSecond * scheduling.kvBytesScale * jobs.timeScale : 0)
        m.reason = reason
        m.stageViaMemoryHost = canStage(s)
        var mc = MigrationCommand(); mc.migrate = m
        save(r)
        order.append(id)
        try s.enqueue(.feature(MigrationHandler.feature, node: fromNode, mc))
        router.migrationStarted(request, to: toReplica)
        lastNews[id] = s.clock.wallNanos()
        s.count("migrations_started")
        s.count("migrations/" + reason)
        s.event(fromNode, "migration", "\(id): \(request) \(from)→\(toReplica) on \(dest.node) (\(method.rawValue), \(reason))")
        return r
    }

    // MARK: Store

    private func save(_ r: MigrationRecord) {
        records[r.migrationID] = r
        dirty.insert(r.migrationID)
    }

    private func persist(_ s: CoordinatorServices) {
        guard !dirty.isEmpty else { return }
        do {
            try s.store.batch {
                for id in dirty.sorted() {
                    guard let r = records[id] else { continue }
                    _ = try s.store.database.run("INSERT OR REPLACE INTO migrations(id, state, record) VALUES(?,?,?)",
                                                 [.text(id), .text(r.state), .blob(Array(try r.serializedData()))])
                }
            }
            dirty.removeAll()
        } catch {
            s.logger.error("could not persist migrations: \(error)")
        }
    }

    public func flush(_ s: CoordinatorServices) throws { persist(s) }

    // MARK: Operator API

    /// Listing is a read; moving a request is an operator's.
    public func access(_ envelope: Envelope) -> AccessNeed {
        guard case .featureRequest(let fm)? = envelope.body, let r = try? MigrationApiRequest(serializedBytes: fm.body),
              case .list? = r.action else { return .operator }
        return .anyRole
    }

    public func handleRequest(_ envelope: Envelope, _ s: CoordinatorServices) -> Envelope.OneOf_Body? {
        guard case .featureRequest(let fm)? = envelope.body else { return nil }
        guard let request = try? MigrationApiRequest(serializedBytes: fm.body) else {
            return .error(Self.error("the migration feature expects a MigrationApiRequest"))
        }
        var reply = MigrationApiReply()
        reply.policy = policy.name; reply.method = settings.method.rawValue; reply.kvBytesScale = scheduling.kvBytesScale
        switch request.action {
        case .migrate(let m)?:
            guard scheduling.jobs != nil else { return .error(Self.error("the coordinator is starting")) }
            let method: MigrationMethod
            if m.method.isEmpty { method = settings.method } else {
                guard let x = MigrationMethod(rawValue: m.method) else { return .error(Self.error("unknown method '\(m.method)' (live, blocking or recompute)")) }
                method = x
            }
            guard let node = s.membership.nodes[m.toNode] else { return .error(Self.error("no node '\(m.toNode)'; see `strato status`")) }
            guard node.info.state == .alive else { return .error(Self.error("node \(m.toNode) is \(node.info.state)")) }
            guard let rec = router.records[m.requestID] else { return .error(Self.error("no request '\(m.requestID)'")) }
            guard rec.finished == nil else { return .error(Self.error("request \(m.requestID) has finished")) }
            if rec.node == m.toNode { return .error(Self.error("request \(m.requestID) is already on node \(m.toNode)")) }
            let candidates = router.ready.filter { $0.value.node == m.toNode }
            guard let target = candidates.filter({ $0.value.service == rec.request.serviceID && $0.key != rec.replica }).keys.sorted().first else {
                let others = Set(candidates.values.map(\.service)).sorted()
                return .error(Self.error(others.isEmpty ? "node \(m.toNode) serves no replica of \(rec.request.serviceID)"
                                                        : "node \(m.toNode) serves \(others.joined(separator: ", ")), not \(rec.request.serviceID) (another model)"))
            }
            do {
                let r = try start(request: m.requestID, from: nil, to: target, method: method, reason: "operator", s)
                reply.migrationID = r.migrationID
                reply.migrations = [r]
            } catch {
                s.count("rejected_migrations")
                return .error(Self.error("\(error)"))
            }
            persist(s)
        case .list(let l)?:
            let limit = l.limit > 0 ? Int(l.limit) : 200
            let chosen = order.filter { l.includeDone || Self.live.contains(records[$0]!.state) }
            reply.migrations = chosen.suffix(limit).compactMap { records[$0] }
            for r in records.values { reply.counts["state/" + r.state, default: 0] += 1; reply.counts["reason/" + r.reason, default: 0] += 1 }
            if scheduling.kvBytesScale > 0 {
                reply.notes.append(String(format: "KV blocks moved as real bytes at kv_bytes_scale %g (1/%.0f of their real size)", scheduling.kvBytesScale, 1 / scheduling.kvBytesScale)
                                   + (settings.kvLinkBytesPerSecond > 0 ? String(format: ", each copy taking at least the real size's time on the emulated %.1f Gbit/s KV link", settings.kvLinkBytesPerSecond * 8 / 1e9) : ""))
            }
        case nil:
            return .error(Self.error("a MigrationApiRequest with no action"))
        }
        var out = FeatureMessage(); out.feature = MigrationHandler.feature; out.body = (try? reply.serializedData()) ?? Data()
        return .featureReply(out)
    }

    static func error(_ message: String) -> ErrorReply {
        var e = ErrorReply(); e.code = .invalidRequest; e.message = message; return e
    }

    public func traceCounters() -> [String: [String: Double]] {
        var states: [String: Double] = [:]
        for r in records.values { states[r.state, default: 0] += 1 }
        return states.isEmpty ? [:] : ["migrations": states]
    }

    /// Migrations in flight or orphaned (the lost-nothing check wants none at the end).
    public var unfinished: Int { inFlight.count }
}
