import Foundation

/// What an import produced: rows, facts (single derived figures such as the co-location slowdown),
/// and the rows it skipped with the reason for each.
public struct ImportResult: Sendable {
    public var rows: [PerfRow] = []
    public var facts: [KnowledgeFact] = []
    public var skipped: [DataError] = []
    public var files: [String] = []
    public init() {}
    public mutating func merge(_ other: ImportResult) {
        rows += other.rows; facts += other.facts; skipped += other.skipped; files += other.files
    }
}

/// A single figure derived from measurements, e.g. `colocation_slowdown` on `V100`.
public struct KnowledgeFact: Sendable, Codable, Equatable {
    public var name: String
    public var gpuModel: String
    public var value: Double
    public var source: String
    public init(name: String, gpuModel: String, value: Double, source: String) {
        self.name = name; self.gpuModel = gpuModel; self.value = value; self.source = source
    }
}

/// Maps the GPU names the published data uses ("NVIDIA A100-SXM4-80GB", "Tesla T4", "v100") to
/// the catalogue's.
public func catalogueGPUName(_ published: String) -> String? {
    var s = published.replacingOccurrences(of: "NVIDIA ", with: "").replacingOccurrences(of: "Tesla ", with: "")
    s = s.replacingOccurrences(of: "-SXM4", with: "").replacingOccurrences(of: "-PCIE", with: "")
    return GPUCatalog.model(named: s.trimmingCharacters(in: .whitespaces))?.name
}

/// Reads the seed data under a `shared/data` folder: VectorLM fine-tuning throughputs, Gavel's
/// training throughputs and Vidur's inference operator profiles.
public enum KnowledgeImporter {
    /// The knowledge base every part of Stratolab starts from — the coordinator, the GPU agents'
    /// emulation and the digital twin — so that they agree: every seed file imported, then every
    /// configuration missing for the catalogue's GPU models (and any other imported one) estimated.
    public static func seeded(dataDirectory dir: String, extraGPUModels: [String] = []) -> (kb: KnowledgeBase, imported: ImportResult, estimated: Int) {
        let imported = importAll(dataDirectory: dir)
        var kb = KnowledgeBase(rows: imported.rows, facts: imported.facts)
        let models = Array(Set(GPUCatalog.names + extraGPUModels + imported.rows.map(\.key.gpuModel))).sorted()
        let n = Estimator.estimateMissing(in: &kb, gpuModels: models)
        return (kb, imported, n)
    }

    public static func importAll(dataDirectory dir: String) -> ImportResult {
        var result = ImportResult()
        let vectorLM = dir + "/training/vectorlm-llm-finetune-throughput.md"
        let gavel = dir + "/training/gavel/simulation_throughputs.json"
        result.merge(importFile(vectorLM))
        result.merge(importFile(gavel))
        let vidurDir = dir + "/profiles/vidur"
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: vidurDir)) ?? []).filter { $0.hasSuffix(".csv") }.sorted()
        for f in files { result.merge(importFile(vidurDir + "/" + f)) }
        if result.files.isEmpty {
            result.skipped.append(DataError(file: dir, line: 0, field: "(folder)", message: "no known data files found (expected training/, profiles/vidur/)"))
        }
        return result
    }

    /// Imports one file, choosing the reader by its name.
    public static func importFile(_ path: String) -> ImportResult {
        var r = ImportResult()
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            r.skipped.append(DataError(file: path, line: 0, field: "(file)", message: "cannot read the file"))
            return r
        }
        let name = (path as NSString).lastPathComponent
        if name.hasSuffix(".md") { r = VectorLMReader.read(text, file: path) }
        else if name.hasSuffix(".json") { r = GavelThroughputReader.read(data, file: path) }
        else if name.hasSuffix(".csv") { r = VidurProfileReader.read(text, file: path) }
        else { r.skipped.append(DataError(file: path, line: 0, field: "(file)", message: "unknown data file kind (expected .md, .json or .csv)")) }
        r.files = [path]
        return r
    }
}

/// VectorLM's Markdown table: one column per model, one row per (method, GPU, count); values are
/// tokens/s at batch 8 per GPU; `nan` means the configuration did not fit in memory.
public enum VectorLMReader {
    public static let batchPerGPU = 8

    public static func read(_ text: String, file: String) -> ImportResult {
        var r = ImportResult()
        let lines = text.components(separatedBy: "\n")
        var models: [String]? = nil
        for (i, raw) in lines.enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            guard line.hasPrefix("|") else { continue }
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast()
                .map { $0.trimmingCharacters(in: .whitespaces) }
            if models == nil {
                models = cells.dropFirst().map { ModelCatalog.canonicalName($0) }
                continue
            }
            if cells.allSatisfy({ $0.hasPrefix(":") || $0.hasPrefix("-") || $0.isEmpty }) { continue }
            guard let models else { continue }
            let label = cells.first ?? ""
            guard let (task, gpu, count) = parseLabel(label) else {
                r.skipped.append(DataError(file: file, line: i + 1, field: "configuration", message: "cannot read '\(label)' (expected '(full_rank|lora) GPU xN')"))
                continue
            }
            if cells.count - 1 != models.count {
                r.skipped.append(DataError(file: file, line: i + 1, field: "row", message: "\(cells.count - 1) values for \(models.count) model columns"))
                continue
            }
            for (j, cell) in cells.dropFirst().enumerated() {
                let key = ConfigKey(model: models[j], task: task, gpuModel: gpu, gpuCount: count, batchPerGPU: batchPerGPU)
                let source = "VectorLM reference throughput (\(label), \(models[j]))"
                if cell.lowercased() == "nan" {
                    r.rows.append(PerfRow(key: key, throughput: 0, unit: "tokens/s", fits: false, origin: .measured, source: source + ": did not fit in memory"))
                } else if let v = Double(cell), v > 0, v.isFinite {
                    r.rows.append(PerfRow(key: key, throughput: v, unit: "tokens/s", fits: true, origin: .measured, source: source))
                } else {
                    r.skipped.append(DataError(file: file, line: i + 1, field: models[j], message: "'\(cell)' is not a positive number or nan"))
                }
            }
        }
        if models == nil { r.skipped.append(DataError(file: file, line: 0, field: "(table)", message: "no Markdown table found")) }
        return r
    }

    static func parseLabel(_ label: String) -> (String, String, Int)? {
        let task: String
        if label.hasPrefix("(full_rank)") { task = "finetune-full" } else if label.hasPrefix("(lora)") { task = "finetune-lora" } else { return nil }
        let rest = label[label.index(after: label.firstIndex(of: ")")!)...].trimmingCharacters(in: .whitespaces)
        guard let x = rest.range(of: " x", options: .backwards), let n = Int(rest[x.upperBound...]), n > 0,
              let gpu = catalogueGPUName(String(rest[..<x.lowerBound])) else { return nil }
        return (task, gpu, n)
    }
}

/// Gavel's `simulation_throughputs.json`: steps/s per GPU type and job, alone (`null`) and when
/// sharing a GPU with another job (`[self, other]`); `*_unconsolidated` GPU types are the same
/// jobs spread over servers.
public enum GavelThroughputReader {
    public static func read(_ data: Data, file: String) -> ImportResult {
        var r = ImportResult()
        guard let top = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            r.skipped.append(DataError(file: file, line: 1, field: "(document)", message: "not a JSON object"))
            return r
        }
        for gpuKey in top.keys.sorted() {
            let spread = gpuKey.hasSuffix("_unconsolidated")
            let base = spread ? String(gpuKey.dropLast("_unconsolidated".count)) : gpuKey
            guard let gpu = catalogueGPUName(base) else {
                r.skipped.append(DataError(file: file, line: 0, field: gpuKey, message: "unknown GPU type"))
                continue
            }
            guard let jobs = top[gpuKey] as? [String: Any] else {
                r.skipped.append(DataError(file: file, line: 0, field: gpuKey, message: "expected an object of jobs"))
                continue
            }
            var ratios: [Double] = []
            for jobKey in jobs.keys.sorted() {
                guard let (model, batch, scale) = parseJobKey(jobKey) else {
                    r.skipped.append(DataError(file: file, line: 0, field: "\(gpuKey).\(jobKey)", message: "cannot read the job (expected \"('Model (batch size B)', N)\")"))
                    continue
                }
                guard let entry = jobs[jobKey] as? [String: Any], let alone = (entry["null"] as? NSNumber)?.doubleValue else {
                    r.skipped.append(DataError(file: file, line: 0, field: "\(gpuKey).\(jobKey).null", message: "missing the steps/s alone"))
                    continue
                }
                let key = ConfigKey(model: model, task: "train", gpuModel: gpu, gpuCount: scale, layout: spread ? "spread" : "packed", batchPerGPU: batch)
                let fits = alone > 0 && alone.isFinite
                r.rows.append(PerfRow(key: key, throughput: fits ? alone : 0, unit: "steps/s", stepTime: fits ? 1 / alone : nil, fits: fits,
                                      origin: .measured, source: "Gavel simulation_throughputs.json \(gpuKey) \(jobKey)"))
                if !spread && scale == 1 && fits {
                    for (other, v) in entry where other != "null" {
                        if let pair = v as? [NSNumber], pair.count == 2, pair[0].doubleValue > 0 { ratios.append(pair[0].doubleValue / alone) }
                    }
                }
            }
            if !ratios.isEmpty {
                ratios.sort()
                r.facts.append(KnowledgeFact(name: "colocation_slowdown", gpuModel: gpu, value: ratios[ratios.count / 2],
                                             source: "median of \(ratios.count) Gavel co-located pairs on \(gpuKey): steps/s shared / alone"))
            }
        }
        return r
    }

    /// "('ResNet-18 (batch size 16)', 1)" → ("ResNet-18", 16, 1).
    public static func parseJobKey(_ key: String) -> (String, Int, Int)? {
        guard key.hasPrefix("('"), let close = key.range(of: "', ", options: .backwards), key.hasSuffix(")") else { return nil }
        let name = String(key[key.index(key.startIndex, offsetBy: 2)..<close.lowerBound])
        guard let scale = Int(key[close.upperBound..<key.index(before: key.endIndex)]) else { return nil }
        guard let b = name.range(of: " (batch size "), name.hasSuffix(")"),
              let batch = Int(name[b.upperBound..<name.index(before: name.endIndex)]) else { return nil }
        return (String(name[..<b.lowerBound]), batch, scale)
    }
}

/// Vidur's per-operator profiles (`<gpu>_<model>_mlp.csv`): one forward iteration's non-attention
/// time is the embedding plus, per layer, the norms, projections, rotary, MLP and residual adds
/// (two per layer). Attention kernels are not in the profile; `InferenceModel` adds them from the
/// KV bytes read at the GPU's memory bandwidth.
public enum VidurProfileReader {
    static let perLayerOps: [(String, Double)] = [
        ("input_layernorm", 1), ("attn_pre_proj", 1), ("attn_rope", 1), ("attn_post_proj", 1),
        ("post_attention_layernorm", 1), ("mlp_up_proj", 1), ("mlp_act", 1), ("mlp_down_proj", 1), ("add", 2),
    ]

    public static func read(_ text: String, file: String) -> ImportResult {
        var r = ImportResult()
        let name = ((file as NSString).lastPathComponent as NSString).deletingPathExtension
        let parts = name.split(separator: "_", maxSplits: 1).map(String.init)
        guard parts.count == 2, let gpu = catalogueGPUName(parts[0]) else {
            r.skipped.append(DataError(file: file, line: 0, field: "(file name)", message: "expected <gpu>_<model>_mlp.csv with a known GPU"))
            return r
        }
        var modelName = parts[1]
        if modelName.hasSuffix("_mlp") { modelName.removeLast(4) }
        modelName = ModelCatalog.canonicalName(modelName)
        guard let arch = ModelCatalog.model(named: modelName) else {
            r.skipped.append(DataError(file: file, line: 0, field: "(file name)", message: "unknown model '\(modelName)' (add it to ModelCatalog)"))
            return r
        }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        guard let header = lines.first?.split(separator: ",", omittingEmptySubsequences: false).map(String.init) else {
            r.skipped.append(DataError(file: file, line: 1, field: "(header)", message: "empty file"))
            return r
        }
        var col: [String: Int] = [:]
        for (i, h) in header.enumerated() { col[h] = i }
        var needed = ["num_tokens", "num_tensor_parallel_workers", "time_stats.emb.mean", "time_stats.emb.std"]
        for (op, _) in perLayerOps { needed += ["time_stats.\(op).mean", "time_stats.\(op).std"] }
        let missing = needed.filter { col[$0] == nil }
        guard missing.isEmpty else {
            r.skipped.append(DataError(file: file, line: 1, field: missing.joined(separator: ", "), message: "missing column(s)"))
            return r
        }
        for (i, line) in lines.enumerated().dropFirst() {
            let cells = line.split(separator: ",", omittingEmptySubsequences: false)
            func value(_ c: String) -> Double? { let j = col[c]!; return j < cells.count ? Double(cells[j]) : nil }
            guard let n = value("num_tokens"), let tp = value("num_tensor_parallel_workers"), n >= 1, tp >= 1 else {
                r.skipped.append(DataError(file: file, line: i + 1, field: "num_tokens", message: "missing or not a positive number"))
                continue
            }
            var mean = 0.0, variance = 0.0, bad: String? = nil
            for (op, times) in [("emb", 1.0)] + perLayerOps.map({ ($0.0, $0.1 * Double(arch.layers)) }) {
                guard let m = value("time_stats.\(op).mean"), let s = value("time_stats.\(op).std"), m >= 0, s >= 0 else { bad = "time_stats.\(op).mean"; break }
                mean += m * times
                variance += s * s * times
            }
            if let bad {
                r.skipped.append(DataError(file: file, line: i + 1, field: bad, message: "missing or not a number"))
                continue
            }
            let seconds = mean / 1000
            let key = ConfigKey(model: arch.name, task: "inference", gpuModel: gpu, gpuCount: Int(tp), batchPerGPU: Int(n))
            r.rows.append(PerfRow(key: key, throughput: n / seconds, unit: "tokens/s", stepTime: seconds, fits: true,
                                  stepTimeCV: mean > 0 ? variance.squareRoot() / mean : nil, origin: .measured,
                                  source: "Vidur profile \((file as NSString).lastPathComponent) (non-attention ops × \(arch.layers) layers)"))
        }
        return r
    }
}
