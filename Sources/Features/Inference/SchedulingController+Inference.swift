import Cluster
import Coordinator
import Foundation
import Protocol
import Scheduling

/// Feature "inference" in the scheduling controller: replicas started and stopped on GPU nodes,
/// requests stored before they are accepted, routed to ready replicas, their results made durable
/// before the agent is told to forget them. A lost replica's requests go elsewhere.
extension SchedulingController {
    func startReplica(_ id: String, service: String, placement p: Placement, _ s: CoordinatorServices) throws {
        var sr = StartReplica()
        sr.replicaID = id; sr.serviceID = service; sr.model = p.key.model; sr.gpuModel = p.key.gpuModel
        sr.gpus = p.gpus.map(UInt32.init); sr.batch = UInt32(jobs.scheduler.batchPerReplica[service] ?? 1)
        sr.timeScale = jobs.timeScale
        sr.kvBytesScale = kvBytesScale
        sr.maxNumSeqs = UInt32(jobs.services[service]?.maxNumSeqs ?? 0)
        sr.gpuMemoryUtilization = jobs.services[service]?.gpuMemoryUtilization ?? 0
        // Only a model that does not fit streams its weights.
        sr.offloadWeights = jobs.services[service].flatMap { jobs.scheduler.plannedModel($0)?.weightOffload } != nil
        var ic = InferenceCommand(); ic.startReplica = sr
        try s.enqueue(.feature(InferenceHandler.feature, node: p.nodeID, ic))
        if let rec = jobs.scheduler.state.replicas[id] { try s.store.saveReplica(rec, ready: false) }
        s.event(p.nodeID, "replica_start", "\(id) of \(service) on \(p.gpus.count)x\(p.key.gpuModel)")
    }

    func stopReplica(_ id: String, service: String, node: String, _ s: CoordinatorServices) throws {
        var sr = StopReplica(); sr.replicaID = id
        var ic = InferenceCommand(); ic.stopReplica = sr
        try s.enqueue(.feature(InferenceHandler.feature, node: node, ic))
        try s.store.deleteReplica(id)
        dropServeCommands(replica: id, s)
        s.event(node, "replica_stop", "\(id) of \(service)")
    }

    func forgetLostReplicas(_ s: CoordinatorServices) throws {
        for id in jobs.takeLostReplicas() {
            try s.store.deleteReplica(id)
            dropServeCommands(replica: id, s)
        }
    }

    static func serveRequests(in c: Command) -> ServeRequests? {
        guard case .feature(let f)? = c.action, f.feature == InferenceHandler.feature,
              let ic = try? InferenceCommand(serializedBytes: f.body), case .serveRequests(let sr)? = ic.action else { return nil }
        return sr
    }

    /// Requests queued for a replica that is gone go elsewhere (the router has them back already).
    func dropServeCommands(replica: String, _ s: CoordinatorServices) {
        s.cancelCommands { SchedulingController.serveRequests(in: $0)?.replicaID == replica }
    }

    /// Sends arrived requests to ready replicas. Not written to the command table: the requests
    /// table holds them, and after a coordinator restart every unfinished request is sent again.
    func routeRequests(_ s: CoordinatorServices) -> Bool {
        do { try forgetLostReplicas(s) } catch { s.logger.error("could not delete lost replicas: \(error)") }
        let routes = jobs.requests.route(now: jobs.traceNow(wall: s.clock.wallNanos()))
        guard !routes.isEmpty else { return false }
        do { try s.store.batch { try s.store.saveRequests(jobs.requests.takeDirty()) } } catch { s.logger.error("could not persist routed requests: \(error)") }
        for r in routes {
            var sr = ServeRequests()
            sr.replicaID = r.replica
            sr.requests = r.requests.map(\.message)
            var ic = InferenceCommand(); ic.serveRequests = sr
            do {
                try s.enqueueTransient(.feature(InferenceHandler.feature, node: r.node, ic))
            } catch {
                s.logger.error("could not reserve a command id: \(error)")
                jobs.requests.refused(r.requests.map(\.id), replica: r.replica)
            }
        }
        return true
    }

    func requestResults(_ reports: [FeatureReport], from nodeID: String, clockOffsetNanos offset: Int64, _ s: CoordinatorServices) -> [String] {
        let results = reports.compactMap { try? RequestResult(serializedBytes: $0.body) }
        if results.count < reports.count { s.count("malformed_request_results") }
        // Results are made durable before the agent is told to forget them.
        let completions = results.map { res in
            var c = RequestRouter.Completion(requestID: res.requestID, replicaID: res.replicaID, finished: jobs.traceNow(wall: res.finishedAtUnixNanos + offset),
                                             queued: res.queuedSeconds, service: res.serviceSeconds)
            c.ttft = res.ttftSeconds; c.meanTBT = res.meanTbtSeconds; c.maxTBT = res.maxTbtSeconds; c.preemptions = Int(res.preemptions)
            return c
        }
        let settled = jobs.requests.complete(completions, node: nodeID, slo: { [jobs] in jobs!.services[$0]?.sloSeconds ?? .infinity })
        do {
            try s.store.batch { try s.store.saveRequests(jobs.requests.takeDirty()) }
            return settled
        } catch {
            s.logger.error("could not persist request results: \(error)")
            return []
        }
    }

    func inferenceAcknowledged(_ command: Command, _ feature: FeatureCommand, ack: CommandAck, _ s: CoordinatorServices) {
        guard let ic = try? InferenceCommand(serializedBytes: feature.body) else { return }
        switch ic.action {
        case .startReplica(let r)?:
            if ack.ok {
                jobs.replicaStarted(r.replicaID)
                s.count("replica_starts/" + r.serviceID)
                if let rec = jobs.scheduler.state.replicas[r.replicaID] { try? s.store.saveReplica(rec, ready: true) }
            } else if jobs.scheduler.state.replicas[r.replicaID] != nil {
                s.logLimited("replica_refused", "\(command.nodeID) refused replica \(r.replicaID): \(ack.detail)")
                jobs.replicaFailed(r.replicaID)
            }
        case .serveRequests(let r)? where !ack.ok:
            // The agent does not serve this replica (it restarted): the replica is gone, its
            // requests go elsewhere.
            s.logLimited("serve_refused", "\(command.nodeID) refused requests for \(r.replicaID): \(ack.detail)")
            jobs.requests.refused(r.requests.map(\.requestID), replica: r.replicaID)
            if jobs.scheduler.state.replicas[r.replicaID] != nil { jobs.replicaFailed(r.replicaID) }
        default: break
        }
        persistJobs(s)
    }

    func submitRequests(_ sr: SubmitRequests, _ s: CoordinatorServices) -> Envelope.OneOf_Body? {
        // Stored before the reply (the turn commits before replies go out): a request the client
        // was told is accepted survives a crash.
        let (accepted, duplicates, rejected) = jobs.requests.submit(sr.requests.map(\.serviceRequest), services: jobs.services)
        do { try s.store.batch { try s.store.saveRequests(jobs.requests.takeDirty()) } } catch {
            s.logger.error("could not persist requests: \(error)")
            return nil   // no reply: the client sends them again
        }
        if !rejected.isEmpty { s.count("rejected_requests") }
        var r = SubmitRequestsReply(); r.accepted = UInt32(accepted); r.duplicates = UInt32(duplicates); r.rejected = Array(rejected.prefix(100))
        return .submitRequestsReply(r)
    }
}
