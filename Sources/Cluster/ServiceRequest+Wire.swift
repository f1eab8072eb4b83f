import Protocol
import Scheduling

extension ServiceRequest {
    /// As sent on the wire (driver to coordinator, coordinator to agent; inference.proto). The
    /// request model stays in Scheduling, which knows nothing of the wire.
    public var message: InferenceRequest {
        var m = InferenceRequest()
        m.requestID = id; m.serviceID = serviceID; m.arrival = arrival
        m.prefillTokens = UInt32(prefill); m.decodeTokens = UInt32(decode); m.highPriority = highPriority
        m.prefixKeys = prefixKeys; m.prefixChunkTokens = UInt32(prefixChunkTokens)
        return m
    }
}

extension InferenceRequest {
    /// The request model of a wire request (its fields checked by whoever accepts it).
    public var serviceRequest: ServiceRequest {
        var r = ServiceRequest(id: requestID, serviceID: serviceID, arrival: arrival, prefill: Int(prefillTokens), decode: Int(decodeTokens), highPriority: highPriority)
        r.prefixKeys = prefixKeys; r.prefixChunkTokens = Int(prefixChunkTokens)
        return r
    }
}
