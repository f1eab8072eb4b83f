import Foundation

/// One inference request of a service: when it arrives (trace seconds) and its token counts.
public struct ServiceRequest: Sendable, Equatable {
    public var id: String
    public var serviceID: String
    public var arrival: Double
    public var prefill: Int
    public var decode: Int
    /// High-priority requests get KV headroom (the migration policies keep room for them to grow).
    public var highPriority = false
    /// The prompt's KV chunk keys, chained (`PrefixKeys`), and tokens per chunk; empty when the
    /// workload says nothing of shared prefixes.
    public var prefixKeys: [String] = []
    public var prefixChunkTokens = 0
    public init(id: String, serviceID: String, arrival: Double, prefill: Int, decode: Int, highPriority: Bool = false) {
        self.id = id; self.serviceID = serviceID; self.arrival = arrival; self.prefill = prefill; self.decode = decode; self.highPriority = highPriority
    }
}

/// Request arrivals for services: a Poisson process whose rate follows each service's rate curve
/// (piecewise constant, as the twin reads it), token counts drawn from the service's request mix
/// (the Azure trace's own rows) or its means. Seeded, so a testbed run and its twin see the same
/// requests.
public enum RequestStream {
    public static func generate(_ services: [ServiceSpec], until horizon: Double, seed: UInt64) -> [ServiceRequest] {
        var out: [ServiceRequest] = []
        for (si, s) in services.sorted(by: { $0.id < $1.id }).enumerated() {
            var rng = SplitMix64(seed: seed &* 1_000_003 &+ UInt64(si))
            let points = s.rateCurve.sorted { $0.time < $1.time }
            guard !points.isEmpty else { continue }
            var n = 0
            // Segment by segment: the process is memoryless, so each segment starts afresh at its
            // own rate.
            for (i, p) in points.enumerated() where p.rps > 0 {
                let end = min(i + 1 < points.count ? points[i + 1].time : horizon, horizon)
                var t = p.time
                while true {
                    t += rng.exponential(mean: 1 / p.rps)
                    guard t < end else { break }
                    let tokens = s.requestMix.isEmpty
                        ? TokenCount(prefill: max(1, Int(s.meanPrefillTokens.rounded())), decode: max(1, Int(s.meanDecodeTokens.rounded())))
                        : rng.pick(s.requestMix)
                    n += 1
                    out.append(ServiceRequest(id: "\(s.id)-q\(n)", serviceID: s.id, arrival: t, prefill: tokens.prefill, decode: tokens.decode))
                }
            }
        }
        return out.sorted { ($0.arrival, $0.id) < ($1.arrival, $1.id) }
    }
}
