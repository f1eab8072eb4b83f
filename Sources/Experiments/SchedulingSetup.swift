import Foundation
import Scheduling

/// Where the seed data lives: `$STRATO_DATA`, else `data/` in the working directory (the copy
/// shipped with the repository), else `data/` beside the repository the binary was built in.
public enum DataPaths {
    public static func dataDirectory(_ explicit: String? = nil) -> String {
        if let explicit { return explicit }
        if let env = ProcessInfo.processInfo.environment["STRATO_DATA"], !env.isEmpty { return env }
        let fm = FileManager.default
        if fm.fileExists(atPath: "data/training") { return "data" }
        // .build/<config>/strato → repository root
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        for _ in 0..<5 {
            if fm.fileExists(atPath: dir.appendingPathComponent("data/training").path) { return dir.appendingPathComponent("data").path }
            dir = dir.deletingLastPathComponent()
        }
        return "data"
    }
}

/// Builds a knowledge base from the seed data and completes it for a cluster's GPU models.
public enum KnowledgeSeeding {
    public static func seeded(dataDirectory: String, gpuModels: [String]) -> (KnowledgeBase, ImportResult, estimated: Int) {
        let s = KnowledgeImporter.seeded(dataDirectory: dataDirectory, extraGPUModels: gpuModels)
        return (s.kb, s.imported, s.estimated)
    }
}

/// A cluster of GPU nodes for the twin: `MODEL:TOTAL/PER_NODE,…` (e.g. `T4:24/4,A100-80GB:16/8,V100:24/8`).
public enum ClusterSpec {
    public struct ParseError: Error, CustomStringConvertible { public let description: String }

    public static func parse(_ text: String) throws -> [NodeSlot] {
        var nodes: [NodeSlot] = []
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !part.isEmpty {
            let mp = part.split(separator: ":").map(String.init)
            guard mp.count == 2 else { throw ParseError(description: "cluster '\(part)': expected MODEL:TOTAL/PER_NODE") }
            guard let model = GPUCatalog.model(named: mp[0]) else {
                throw ParseError(description: "cluster '\(part)': unknown GPU model '\(mp[0])' (known: \(GPUCatalog.names.joined(separator: ", ")))")
            }
            let tp = mp[1].split(separator: "/").map { Int($0) }
            guard tp.count == 2, let total = tp[0], let per = tp[1], total > 0, per > 0, total % per == 0 else {
                throw ParseError(description: "cluster '\(part)': TOTAL/PER_NODE must be positive and TOTAL a multiple of PER_NODE")
            }
            let slug = model.name.lowercased()
            for i in 0..<(total / per) { nodes.append(NodeSlot(id: String(format: "%@-%03d", slug, i), gpuModel: model.name, gpuCount: per)) }
        }
        guard !nodes.isEmpty else { throw ParseError(description: "cluster '\(text)' has no nodes") }
        return nodes
    }

    /// The GPU nodes of a topology (virtual nodes expanded).
    public static func nodes(of topology: Topology) -> [NodeSlot] {
        topology.nodes.flatMap { n -> [NodeSlot] in
            guard case .gpu(let model, let count) = n.spec, let m = GPUCatalog.model(named: model) else { return [] }
            let ids = n.virtual > 1 ? (0..<n.virtual).map { "\(n.id)-\($0)" } : [n.id]
            return ids.map { NodeSlot(id: $0, gpuModel: m.name, gpuCount: count) }
        }
    }

    public static let d21 = "T4:24/4,A100-80GB:16/8,V100:24/8"
}

/// Online services derived from the Azure LLM traces, for the default experiments.
public enum ServiceSetup {
    /// `trace`: `code`, `conversation` or `both`; `minReplicas` each service keeps at least.
    public static func azureServices(dataDirectory: String, seconds: Double, gpuModel: String, meanRPS: Double, sloSeconds: Double = 20,
                                     trace: String = "both", minReplicas: Int = 1, model: String = "Llama-2-7b") throws -> [ServiceSpec] {
        var out: [ServiceSpec] = []
        let all = [("code", "azure_llm_2023_code.csv"), ("conv", "azure_llm_2023_conv.csv")]
        for (name, file) in all where trace == "both" || (trace == "code") == (name == "code") {
            let shape = try AzureTraceShape.read(file: dataDirectory + "/inference/" + file)
            let slug = model == "Llama-2-7b" ? "llama2-7b" : model.lowercased().replacingOccurrences(of: ".", with: "")
            var s = ServiceSpec(id: "\(slug)-\(name)", model: model, gpuModel: gpuModel, gpusPerReplica: 1,
                                rateCurve: shape.curve(seconds: seconds, meanRPS: meanRPS),
                                meanPrefillTokens: shape.meanPrefillTokens, meanDecodeTokens: shape.meanDecodeTokens, sloSeconds: sloSeconds,
                                minReplicas: minReplicas)
            s.requestMix = shape.mix
            out.append(s)
        }
        return out
    }

    /// One service replaying the Mooncake conversation trace (real arrivals compressed or
    /// stretched to `meanRPS`, with prefix chunk keys), and its requests up to `seconds`.
    public static func mooncakeService(dataDirectory: String, seconds: Double, gpuModel: String, meanRPS: Double, sloSeconds: Double,
                                       model: String, minReplicas: Int) throws -> (ServiceSpec, [ServiceRequest]) {
        let rows = try MooncakeTrace.read(file: dataDirectory + "/inference/mooncake/conversation_trace.jsonl")
        let span = max(1e-9, rows.last!.arrival - rows.first!.arrival)
        let factor = (Double(rows.count) / span) / meanRPS   // trace seconds per replayed second
        let id = "mooncake-conv"
        var requests: [ServiceRequest] = []
        for (i, r) in rows.enumerated() {
            let t = (r.arrival - rows.first!.arrival) / factor
            guard t < seconds else { break }
            var q = ServiceRequest(id: "\(id)-\(i)", serviceID: id, arrival: t, prefill: r.inputTokens, decode: max(1, r.outputTokens))
            q.prefixKeys = PrefixKeys.chain(r.hashIDs, model: model)
            q.prefixChunkTokens = MooncakeTrace.blockTokens
            requests.append(q)
        }
        let n = Double(max(1, requests.count))
        var s = ServiceSpec(id: id, model: model, gpuModel: gpuModel, gpusPerReplica: 1, rateCurve: [RatePoint(time: 0, rps: meanRPS)],
                            meanPrefillTokens: Double(requests.reduce(0) { $0 + $1.prefill }) / n,
                            meanDecodeTokens: Double(requests.reduce(0) { $0 + $1.decode }) / n, sloSeconds: sloSeconds, minReplicas: minReplicas)
        s.requestMix = requests.prefix(2000).map { TokenCount(prefill: $0.prefill, decode: $0.decode) }
        return (s, requests)
    }
}
