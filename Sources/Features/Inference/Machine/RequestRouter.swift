import Foundation
import Scheduling

/// Inference requests on the testbed, from acceptance to their result. Requests wait here until
/// their arrival (trace time) and a ready replica of their service; each goes to the replica with
/// the fewest outstanding requests (join-shortest-queue), up to twice its batch, so a new replica
/// takes load at once. A replica that is lost (its node died, it was stopped, or its agent no
/// longer knows it) gives its outstanding requests back to the front of the queue; the first
/// result for a request wins and later ones are only settled. Pure (no wire, no clock: times are
/// trace seconds the caller passes): the coordinator persists what `dirty` names and turns routes
/// into commands; the twin runs the same router on its virtual clock.
public final class RequestRouter {
    public struct Record: Equatable {
        public var request: ServiceRequest
        public var attempts = 0
        public var replica: String?
        public var node: String?
        public var finished: Double?
        public var latency: Double?
        public var queued = 0.0
        public var service = 0.0
        public var withinSLO = false
        /// From arrival to the first token; the request's mean and largest gap between tokens;
        /// how often its engine preempted it.
        public var ttft: Double?
        public var meanTBT = 0.0
        public var maxTBT = 0.0
        public var preemptions = 0
        /// Times it moved between replicas with its KV cache.
        public var migrations = 0
    }
    public struct ReadyReplica: Equatable { public var service: String; public var node: String; public var batch: Int }
    /// A request's result as the replica measured it; `finished` in trace seconds.
    public struct Completion: Equatable {
        public var requestID: String
        public var replicaID: String
        public var finished: Double
        public var queued: Double
        public var service: Double
        /// From reaching the replica to the first token; mean and largest gap between tokens.
        public var ttft = 0.0
        public var meanTBT = 0.0
        public var maxTBT = 0.0
        public var preemptions = 0
        public init(requestID: String, replicaID: String, finished: Double, queued: Double, service: Double) {
            self.requestID = requestID; self.replicaID = replicaID; self.finished = finished; self.queued = queued; self.service = service
        }
    }

    public init() {}

    public private(set) var records: [String: Record] = [:]
    /// Per service, waiting request ids in arrival order.
    private var waiting: [String: [String]] = [:]
    private var waitingUnsorted = Set<String>()
    public private(set) var ready: [String: ReadyReplica] = [:]
    private var outstanding: [String: Set<String>] = [:]
    /// Request ids whose record changed since the last `takeDirty`.
    private(set) var dirty = Set<String>()
    /// Requests being migrated: if their replica is lost meanwhile they wait for the migration's
    /// outcome (the destination may resume them from the KV that arrived) instead of going back
    /// to the queue at once. Value: the destination replica.
    public private(set) var migrating: [String: String] = [:]
    /// Migrating requests whose source replica was lost: neither queued nor on a replica.
    public private(set) var held = Set<String>()
    /// Replicas that take no new requests (their node is drained, or they are being emptied).
    public private(set) var closed = Set<String>()

    // MARK: requests

    /// Accepts requests for known services; a request id seen before is a duplicate (accepted once).
    public func submit(_ requests: [ServiceRequest], services: [String: ServiceSpec]) -> (accepted: Int, duplicates: Int, rejected: [String]) {
        var accepted = 0, duplicates = 0, rejected: [String] = []
        for r in requests {
            if r.id.isEmpty { rejected.append("(no id): request_id is empty"); continue }
            if records[r.id] != nil { duplicates += 1; continue }
            guard services[r.serviceID] != nil else { rejected.append("\(r.id): unknown service '\(r.serviceID)'"); continue }
            guard r.arrival >= 0, r.arrival.isFinite, r.decode >= 1, r.prefill >= 0 else {
                rejected.append("\(r.id): arrival must be ≥ 0 and decode_tokens ≥ 1"); continue
            }
            if !r.prefixKeys.isEmpty {
                guard r.prefixChunkTokens >= 16, r.prefixKeys.count <= 65_536, r.prefixKeys.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 512 }) else {
                    rejected.append("\(r.id): prefix_keys need prefix_chunk_tokens ≥ 16, at most 65536 keys of 1 to 512 bytes"); continue
                }
            }
            records[r.id] = Record(request: r)
            counted(records[r.id]!)
            enqueue(r.id, service: r.serviceID)
            dirty.insert(r.id)
            accepted += 1
        }
        return (accepted, duplicates, rejected)
    }

    /// A record read back from the store after a coordinator restart; unfinished ones wait again.
    /// A request on a replica that is still ready stays its: it is sent there again (the agent
    /// serves a request once, so a copy it holds, finished or moved on, is not served twice), and
    /// goes elsewhere only if that replica no longer knows it. Restore replicas first.
    public func restore(_ record: Record) {
        var r = record
        if r.finished == nil {
            if let rep = r.replica, let ready = ready[rep], ready.node == r.node {
                outstanding[rep, default: []].insert(r.request.id)
                resend[rep, default: []].append(r.request.id)
            } else {
                r.replica = nil; r.node = nil
                enqueue(r.request.id, service: r.request.serviceID)
            }
        }
        records[r.request.id] = r
        counted(r)
    }

    /// Requests to send again to the replica they were on (after a coordinator restart).
    private var resend: [String: [String]] = [:]

    private func enqueue(_ id: String, service: String) {
        waiting[service, default: []].append(id)
        waitingUnsorted.insert(service)
    }

    // MARK: replicas

    public func replicaReady(_ id: String, service: String, node: String, batch: Int) {
        ready[id] = ReadyReplica(service: service, node: node, batch: max(1, batch))
    }

    /// The replica is gone: its unfinished requests wait again (ahead of newer ones). Returns them.
    @discardableResult
    public func replicaGone(_ id: String) -> [String] {
        ready[id] = nil
        kv[id] = nil
        resend[id] = nil
        closed.remove(id)
        sentPrefixes[id] = nil
        let lost = (outstanding.removeValue(forKey: id) ?? []).sorted()
        for q in lost {
            guard var r = records[q], r.finished == nil else { continue }
            r.replica = nil; r.node = nil
            records[q] = r
            if migrating[q] != nil { held.insert(q); continue }
            enqueue(q, service: r.request.serviceID)
        }
        return lost
    }

    /// Requests sent to a replica that refused them (it is not serving there): wait again.
    public func refused(_ ids: [String], replica: String) {
        for q in ids where outstanding[replica]?.remove(q) != nil {
            guard var r = records[q], r.finished == nil else { continue }
            r.replica = nil; r.node = nil
            records[q] = r
            enqueue(q, service: r.request.serviceID)
        }
    }

    // MARK: migration

    /// A migration of `id` to `replica` started: if its source is lost meanwhile, it is held.
    public func migrationStarted(_ id: String, to replica: String) {
        guard records[id]?.finished == nil else { return }
        migrating[id] = replica
    }

    /// The request now runs on `replica` of `node` (a migration committed there).
    public func moved(_ id: String, to replica: String, node: String) {
        migrating[id] = nil
        held.remove(id)
        guard var r = records[id], r.finished == nil else { return }
        if let from = r.replica { outstanding[from]?.remove(id) }
        r.replica = replica
        r.node = node
        r.migrations += 1
        records[id] = r
        outstanding[replica, default: []].insert(id)
        tallies[r.request.serviceID]?.migrations += 1
        dirty.insert(id)
    }

    /// The migration ended without moving the request: it stays where it was, or, when its source
    /// was lost meanwhile, waits again (ahead of newer ones). True when it went back to the queue.
    @discardableResult
    public func migrationEnded(_ id: String) -> Bool {
        migrating[id] = nil
        guard held.remove(id) != nil, let r = records[id], r.finished == nil else { return false }
        enqueue(id, service: r.request.serviceID)
        return true
    }

    /// A replica takes no new requests (true) or takes them again (false); the ones it has stay.
    public func setClosed(_ replica: String, _ isClosed: Bool) {
        if isClosed { closed.insert(replica) } else { closed.remove(replica) }
    }

    /// Requests outstanding on a replica (sent to it, not finished).
    public func outstanding(on replica: String) -> Set<String> { outstanding[replica] ?? [] }

    // MARK: dispatch

    /// How a request picks its replica: the one with the fewest outstanding requests
    /// (join-shortest-queue, the default), or the freest by KV blocks (Llumnix's dispatching: most
    /// free blocks per running request, from the replicas' load reports), both within twice the
    /// replica's batch outstanding.
    public enum Dispatch: String, Sendable { case shortestQueue = "shortest-queue", freeness }
    public var dispatch = Dispatch.shortestQueue
    /// Requests a replica may have outstanding, as a multiple of its batch (nil: no bound, every
    /// request goes to a replica on arrival and waits in its engine's queue, as with vLLM behind
    /// Llumnix's dispatcher).
    public var holdFactor: Int? = RequestRouter.defaultHoldFactor
    /// The coordinator's hold: twice the batch, so a new replica takes load at once.
    public static let defaultHoldFactor = 2
    private func hasRoom(_ load: Int, _ rep: String) -> Bool {
        guard let f = holdFactor else { return true }
        return load < f * ready[rep]!.batch
    }
    /// Each replica's KV as last reported: free blocks less what all its waiting requests need
    /// (Llumnix dispatches on that; its migration counts only the head of the queue) and running
    /// requests. Dispatching takes each routed request's prompt off its replica's free
    /// blocks until the next report.
    private var kv: [String: (free: Int, running: Int)] = [:]
    public func updateKV(_ replica: String, freeBlocks: Int, running: Int) { kv[replica] = (freeBlocks, running) }
    public static let blockTokens = 16

    /// Cache-aware routing (the `tiered` offload policy turns it on): a request with prefix keys
    /// goes to the replica that was last sent the longest run of its leading chunks (its GPU's
    /// prefix cache likely still holds them), unless that replica has more outstanding requests
    /// than the one dispatch would pick plus `affinitySlack` × its batch: cache affinity weighed
    /// against load balance, as DualMap does. Counted per service as `prefixRouted`.
    public var prefixAffinity = false
    public var affinitySlack = 0.25
    /// Chunk keys each replica was sent (bounded; the oldest half goes when full).
    private var sentPrefixes: [String: (keys: Set<String>, order: [String])] = [:]
    public static let affinityKeysPerReplica = 20_000
    public private(set) var prefixRouted = 0

    private func affinity(_ keys: [String], _ replica: String) -> Int {
        guard let held = sentPrefixes[replica]?.keys else { return 0 }
        var n = 0
        while n < keys.count, held.contains(keys[n]) { n += 1 }
        return n
    }

    private func rememberSent(_ keys: [String], on replica: String) {
        var e = sentPrefixes[replica] ?? ([], [])
        for k in keys where e.keys.insert(k).inserted { e.order.append(k) }
        if e.order.count > RequestRouter.affinityKeysPerReplica {
            let drop = e.order.count / 2
            for k in e.order.prefix(drop) { e.keys.remove(k) }
            e.order.removeFirst(drop)
        }
        sentPrefixes[replica] = e
    }

    /// A replica not heard from yet is new and assumed as free as the freest replica of its service
    /// that has reported (or without bound when none has). Requests sent to it before its first
    /// report come off that estimate like any other, so a late first report does not make it look
    /// empty to every request of a burst.
    /// A replica whose waiting requests need more blocks than it has free ranks by how many it
    /// lacks, below every replica with room (dividing a shortfall by few running requests would
    /// make the worst look best).
    private func freeness(_ replica: String, unreported: Int) -> Double {
        let k = kv[replica] ?? (unreported, 0)
        return k.free < 0 ? Double(k.free) : Double(k.free) / Double(max(1, k.running))
    }

    /// Routes requests that have arrived by `now` to ready replicas: (replica, node, requests).
    public func route(now: Double) -> [(replica: String, node: String, requests: [ServiceRequest])] {
        var batches: [String: [ServiceRequest]] = [:]
        // First, what a restart left on replicas goes back to them (refused: it waits again).
        for (rep, ids) in resend where ready[rep] != nil {
            for id in ids where records[id]?.finished == nil && records[id]?.replica == rep { batches[rep, default: []].append(records[id]!.request) }
        }
        resend.removeAll()
        for service in waiting.keys.sorted() {
            guard var queue = waiting[service], !queue.isEmpty else { continue }
            if waitingUnsorted.contains(service) {
                queue.sort { (records[$0]!.request.arrival, $0) < (records[$1]!.request.arrival, $1) }
                waitingUnsorted.remove(service)
            }
            let replicas = ready.filter { $0.value.service == service && !closed.contains($0.key) }.map(\.key).sorted()
            let unreportedFree = replicas.compactMap { kv[$0]?.free }.max() ?? Int.max / 2
            var taken = 0
            while taken < queue.count, !replicas.isEmpty {
                let id = queue[taken]
                guard var r = records[id] else { taken += 1; continue }
                if r.finished != nil { taken += 1; continue }   // finished meanwhile (a late first result)
                guard r.request.arrival <= now else { break }
                var best: String?
                var bestLoad = Int.max
                var bestFree = -Double.infinity
                for rep in replicas {
                    let load = outstanding[rep]?.count ?? 0
                    guard hasRoom(load, rep) else { continue }
                    if dispatch == .freeness {
                        let f = freeness(rep, unreported: unreportedFree)
                        if f > bestFree || (f == bestFree && load < bestLoad) { best = rep; bestLoad = load; bestFree = f }
                    } else if load < bestLoad { best = rep; bestLoad = load }
                }
                // Cache affinity, within the slack over the balanced choice.
                if prefixAffinity, !r.request.prefixKeys.isEmpty, best != nil {
                    var pick: (rep: String, matched: Int, load: Int)?
                    for rep in replicas {
                        let load = outstanding[rep]?.count ?? 0
                        guard hasRoom(load, rep), load <= bestLoad + max(1, Int(affinitySlack * Double(ready[rep]!.batch))) else { continue }
                        let m = affinity(r.request.prefixKeys, rep)
                        if m > (pick?.matched ?? 0) || (m > 0 && m == pick?.matched && load < pick!.load) { pick = (rep, m, load) }
                    }
                    if let p = pick, p.rep != best { best = p.rep; prefixRouted += 1 }
                }
                guard let rep = best else { break }
                if prefixAffinity && !r.request.prefixKeys.isEmpty { rememberSent(r.request.prefixKeys, on: rep) }
                if dispatch == .freeness {
                    let k = kv[rep] ?? (unreportedFree, 0)
                    kv[rep] = (k.free - (r.request.prefill + RequestRouter.blockTokens - 1) / RequestRouter.blockTokens, k.running + 1)
                }
                r.replica = rep
                r.node = ready[rep]!.node
                r.attempts += 1
                if r.attempts > 1 { tallies[service]?.resent += 1 }
                records[id] = r
                dirty.insert(id)   // its attempts are kept: how often requests were sent again survives a restart
                outstanding[rep, default: []].insert(id)
                batches[rep, default: []].append(r.request)
                taken += 1
            }
            queue.removeFirst(taken)
            waiting[service] = queue
        }
        return batches.keys.sorted().map { ($0, ready[$0]!.node, batches[$0]!) }
    }

    /// Applies results from `node`. Returns the request ids to settle (all of them: new,
    /// duplicate or unknown).
    public func complete(_ results: [Completion], node: String, slo: (String) -> Double) -> [String] {
        var settled: [String] = []
        for res in results {
            settled.append(res.requestID)
            guard var r = records[res.requestID], r.finished == nil else { continue }
            if let rep = r.replica { outstanding[rep]?.remove(res.requestID) }
            // A result from where it moved (or was still running) settles a migration too.
            outstanding[res.replicaID]?.remove(res.requestID)
            migrating[res.requestID] = nil
            held.remove(res.requestID)
            r.finished = res.finished
            r.latency = max(0, res.finished - r.request.arrival)
            r.replica = res.replicaID
            r.node = node
            r.queued = res.queued
            r.service = res.service
            // It reached the replica `queued + service` before its last token.
            r.ttft = max(0, res.finished - res.queued - res.service + res.ttft - r.request.arrival)
            r.meanTBT = res.meanTBT
            r.maxTBT = res.maxTBT
            r.preemptions = res.preemptions
            r.withinSLO = r.latency! <= slo(r.request.serviceID)
            records[res.requestID] = r
            tallies[r.request.serviceID]?.completed += 1
            tallies[r.request.serviceID]?.latencies.append(r.latency!)
            tallies[r.request.serviceID]?.ttfts.append(r.ttft!)
            tallies[r.request.serviceID]?.tbts.append(r.meanTBT)
            tallies[r.request.serviceID]?.preemptions += r.preemptions
            if r.withinSLO { tallies[r.request.serviceID]?.withinSLO += 1 }
            dirty.insert(res.requestID)
        }
        return settled
    }

    public func takeDirty() -> [Record] {
        defer { dirty.removeAll() }
        return dirty.sorted().compactMap { records[$0] }
    }

    // MARK: views

    /// Requests of each service that arrived more than `age(service)` trace seconds before `now`
    /// and still wait for a replica (a moment's wait while every replica is full is not backlog).
    public func backlog(now: Double, age: (String) -> Double) -> [String: Int] {
        var out: [String: Int] = [:]
        for (service, queue) in waiting {
            let before = now - age(service)
            let n = queue.reduce(0) { $0 + ((records[$1].map { $0.finished == nil && $0.request.arrival <= before } ?? false) ? 1 : 0) }
            if n > 0 { out[service] = n }
        }
        return out
    }

    /// The backlog the scheduler scales replicas for, one rule for the coordinator and the twin:
    /// requests that have waited more than a quarter of their service's SLO for a replica.
    public func scalingBacklog(now: Double, slo: (String) -> Double) -> [String: Int] {
        backlog(now: now) { slo($0) / 4 }
    }

    /// Per service, kept as records change (the experiment asks several times a second, and a
    /// run holds tens of thousands of requests); `resent` counts sends after the first (a lost
    /// replica, a refusal, a coordinator restart).
    public struct Tally {
        public var submitted = 0, completed = 0, withinSLO = 0, resent = 0, preemptions = 0, migrations = 0
        public var latencies: [Double] = [], ttfts: [Double] = [], tbts: [Double] = []
    }
    private var tallies: [String: Tally] = [:]

    public func tally() -> [String: Tally] { tallies }

    private func counted(_ r: Record) {
        var t = tallies[r.request.serviceID] ?? Tally()
        t.submitted += 1
        t.resent += max(0, r.attempts - 1)
        t.migrations += r.migrations
        if let l = r.latency {
            t.completed += 1; t.latencies.append(l); if r.withinSLO { t.withinSLO += 1 }
            t.ttfts.append(r.ttft ?? l); t.tbts.append(r.meanTBT); t.preemptions += r.preemptions
        }
        tallies[r.request.serviceID] = t
    }
}
