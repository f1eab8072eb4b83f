import Foundation

/// Request-rate curves from the Azure LLM inference traces (Splitwise; as converted by Vidur):
/// arrivals are binned, the curve's shape (rate relative to its mean) is kept and stretched over
/// the experiment, and the request mix (mean prefill and decode tokens) is the trace's own.
public struct AzureTraceShape: Sendable {
    /// Relative rate per bin (mean 1).
    public var relativeRates: [Double]
    public var meanPrefillTokens: Double
    public var meanDecodeTokens: Double
    public var requests: Int
    public var spanSeconds: Double
    /// Up to 512 (prefill, decode) pairs taken evenly from the trace's rows: what generated
    /// requests draw their token counts from.
    public var mix: [TokenCount] = []

    public static func read(file: String, bins: Int = 48) throws -> AzureTraceShape {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw DataError(file: file, line: 0, field: "(file)", message: "cannot read the file")
        }
        return try parse(text, file: file, bins: bins)
    }

    public static func parse(_ text: String, file: String, bins: Int = 48) throws -> AzureTraceShape {
        let lines = text.split(separator: "\n").map(String.init)
        guard let header = lines.first?.split(separator: ",").map(String.init) else {
            throw DataError(file: file, line: 1, field: "(header)", message: "empty file")
        }
        let need = ["arrived_at", "num_prefill_tokens", "num_decode_tokens"]
        let missing = need.filter { !header.contains($0) }
        guard missing.isEmpty else { throw DataError(file: file, line: 1, field: missing.joined(separator: ", "), message: "missing column(s)") }
        let ia = header.firstIndex(of: "arrived_at")!, ip = header.firstIndex(of: "num_prefill_tokens")!, id = header.firstIndex(of: "num_decode_tokens")!
        var arrivals: [Double] = [], prefill = 0.0, decode = 0.0, pairs: [TokenCount] = []
        for (i, l) in lines.enumerated().dropFirst() {
            let c = l.split(separator: ",", omittingEmptySubsequences: false)
            guard c.count == header.count, let a = Double(c[ia]), let p = Double(c[ip]), let d = Double(c[id]) else {
                throw DataError(file: file, line: i + 1, field: "row", message: "expected \(header.count) numeric fields")
            }
            arrivals.append(a); prefill += p; decode += d
            pairs.append(TokenCount(prefill: max(1, Int(p)), decode: max(1, Int(d))))
        }
        guard arrivals.count >= 2, let first = arrivals.min(), let last = arrivals.max(), last > first else {
            throw DataError(file: file, line: 2, field: "arrived_at", message: "need at least two requests spread in time")
        }
        var counts = [Double](repeating: 0, count: bins)
        for a in arrivals { counts[min(bins - 1, Int((a - first) / (last - first) * Double(bins)))] += 1 }
        let mean = counts.reduce(0, +) / Double(bins)
        let stride = max(1, pairs.count / 512)
        return AzureTraceShape(relativeRates: counts.map { $0 / mean }, meanPrefillTokens: prefill / Double(arrivals.count),
                               meanDecodeTokens: decode / Double(arrivals.count), requests: arrivals.count, spanSeconds: last - first,
                               mix: Swift.stride(from: 0, to: pairs.count, by: stride).map { pairs[$0] })
    }

    /// A rate curve over `seconds` with the given mean rate.
    public func curve(seconds: Double, meanRPS: Double) -> [RatePoint] {
        let step = seconds / Double(relativeRates.count)
        return relativeRates.enumerated().map { RatePoint(time: Double($0.offset) * step, rps: $0.element * meanRPS) }
    }
}

/// Serving capacity of one replica, from Vidur's operator profiles plus attention modelled from
/// the KV bytes read at the GPU's memory bandwidth:
/// - a forward iteration over `n` tokens costs the profiled non-attention time at `n` tokens
///   (linear interpolation between profiled sizes), plus reading the batch's KV cache;
/// - a request costs one prefill iteration of its prompt, plus its decode tokens, each an
///   iteration shared with the rest of the batch;
/// - the batch is the largest that fits the KV cache in memory left after the weights and keeps
///   the request latency under the SLO.
public struct InferenceModel: Sendable {
    public let arch: ModelArchitecture
    public let gpu: GPUModel
    public let tensorParallel: Int
    let points: [(Double, Double)]   // (tokens, seconds)
    /// Layers kept off the GPU and streamed every step (nil: the whole model is on the GPU).
    public private(set) var weightOffload: WeightOffloadPlan?
    /// Seconds to stream the offloaded layers once: no step is shorter.
    public private(set) var weightStreamSeconds = 0.0
    /// Share of each GPU's memory for weights and KV cache (vLLM's `gpu_memory_utilization`).
    public var memoryUtilization = InferenceModel.defaultMemoryUtilization
    public static let defaultMemoryUtilization = 0.9
    /// Bytes of each GPU's memory the engine may use (weights and KV cache).
    public var usableGPUBytes: Double { gpu.memoryGiB * 1_073_741_824 * memoryUtilization }

    /// This model with its layers beyond `plan.residentLayers` streamed in `streamSeconds` a step.
    public func offloadingWeights(_ plan: WeightOffloadPlan, streamSeconds: Double) -> InferenceModel {
        var m = self
        m.weightOffload = plan
        m.weightStreamSeconds = max(0, streamSeconds)
        return m
    }

    /// Weight bytes each GPU holds.
    public var gpuWeightBytes: Double { weightOffload?.residentWeightBytes ?? arch.weightBytes / Double(tensorParallel) }

    /// A step's seconds from its compute: streamed weights overlap the compute, and bound it below.
    public func step(compute: Double) -> Double { max(compute, weightStreamSeconds) }

    /// Seconds to prefill `tokens` of a prompt alone, chunk by chunk at `budget` tokens a step
    /// (each chunk attends to what came before it): what loading or swapping that KV saves.
    public func prefillSeconds(tokens: Int, budget: Int) -> Double {
        var t = 0.0, done = 0
        while done < tokens {
            let n = min(max(1, budget), tokens - done)
            t += step(compute: iteration(tokens: Double(n)) + attention(kvTokens: Double(done) + Double(n) / 2))
            done += n
        }
        return t
    }

    public init?(kb: KnowledgeBase, model: String, gpuModel: String, tensorParallel: Int) {
        guard let arch = ModelCatalog.model(named: model), let gpu = GPUCatalog.model(named: gpuModel) else { return nil }
        let rows = kb.offline.values.filter { $0.key.task == "inference" && $0.key.model == arch.name && $0.key.gpuModel == gpu.name && $0.key.gpuCount == tensorParallel }
        let pts = rows.compactMap { r in r.stepTime.map { (Double(r.key.batchPerGPU), $0) } }.sorted { $0.0 < $1.0 }
        guard pts.count >= 2 else { return nil }
        self.arch = arch; self.gpu = gpu; self.tensorParallel = tensorParallel; self.points = pts
    }

    /// Non-attention seconds for one iteration over `tokens` tokens.
    public func iteration(tokens: Double) -> Double {
        if tokens <= points[0].0 { return points[0].1 }
        for i in 1..<points.count where tokens <= points[i].0 {
            let (x0, y0) = points[i - 1], (x1, y1) = points[i]
            return y0 + (y1 - y0) * (tokens - x0) / (x1 - x0)
        }
        let (x0, y0) = points[points.count - 2], (x1, y1) = points[points.count - 1]
        return y1 + (y1 - y0) / (x1 - x0) * (tokens - x1)
    }

    /// Seconds to read `kvTokens` tokens of KV cache (memory-bound attention).
    public func attention(kvTokens: Double) -> Double {
        kvTokens * arch.kvBytesPerToken / Double(tensorParallel) / (gpu.memoryBandwidthGBps * 1e9)
    }

    public struct Operating: Sendable {
        public var batch: Int
        public var requestsPerSecond: Double
        public var latencySeconds: Double
    }

    /// The two costs of a request of `prefill` + `decode` tokens in a batch of `batch`: its prefill
    /// iteration, and one decode iteration over the batch.
    public func requestSeconds(prefill: Double, decode: Double, batch: Int) -> (prefill: Double, decodeIteration: Double) {
        let context = prefill + decode / 2
        let decodeIter = step(compute: iteration(tokens: Double(batch)) + attention(kvTokens: Double(batch) * context))
        let prefillTime = step(compute: iteration(tokens: prefill) + attention(kvTokens: prefill / 2))
        return (prefillTime, decodeIter)
    }

    /// A request's latency in a batch of `batch` under continuous batching: while it decodes, the
    /// batch's other slots turn over about once, and each newcomer's prefill stalls the batch
    /// (prefill-prioritising schedulers such as vLLM's), so it waits for `batch` prefills in all,
    /// plus one decode iteration per output token.
    public func latency(prefill: Double, decode: Double, batch: Int) -> Double {
        let (p, iter) = requestSeconds(prefill: prefill, decode: decode, batch: batch)
        return Double(batch) * p + decode * iter
    }

    /// The best operating point for requests of `prefill` + `decode` tokens under `slo` seconds.
    public func operatingPoint(prefill: Double, decode: Double, slo: Double) -> Operating? {
        let free = (usableGPUBytes - gpuWeightBytes) * Double(tensorParallel)
        guard free > 0 else { return nil }
        let maxBatch = max(1, Int(free / (arch.kvBytesPerToken * (prefill + decode))))
        var best: Operating? = nil
        var b = 1
        while b <= min(maxBatch, 512) {
            let latency = latency(prefill: prefill, decode: decode, batch: b)
            let perRequest = latency / Double(b)
            if latency <= slo { best = Operating(batch: b, requestsPerSecond: 1 / perRequest, latencySeconds: latency) }
            else { break }
            b = b < 8 ? b + 1 : b * 2
        }
        return best
    }
}
