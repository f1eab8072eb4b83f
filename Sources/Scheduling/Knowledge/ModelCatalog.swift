import Foundation

/// Architecture facts of the models the knowledge base knows, from their model cards. They are
/// used for sizes (weights to reload on a restart, KV cache per token), never as performance.
public struct ModelArchitecture: Sendable, Equatable {
    public let name: String
    public let parameters: Double
    public let layers: Int
    public let kvHeads: Int
    public let headDim: Int
    public let source: String

    /// FP16 weights, bytes.
    public var weightBytes: Double { parameters * 2 }
    /// FP16 KV cache per token, bytes: 2 (K and V) × layers × kv heads × head dim × 2 bytes.
    public var kvBytesPerToken: Double { Double(2 * layers * kvHeads * headDim * 2) }
}

public enum ModelCatalog {
    public static let models: [ModelArchitecture] = [
        ModelArchitecture(name: "Llama-2-7b", parameters: 6.74e9, layers: 32, kvHeads: 32, headDim: 128, source: "meta-llama/Llama-2-7b-hf config.json"),
        ModelArchitecture(name: "Llama-2-13b", parameters: 13.0e9, layers: 40, kvHeads: 40, headDim: 128, source: "meta-llama/Llama-2-13b-hf config.json"),
        ModelArchitecture(name: "Llama-2-70b", parameters: 69.0e9, layers: 80, kvHeads: 8, headDim: 128, source: "meta-llama/Llama-2-70b-hf config.json"),
        ModelArchitecture(name: "Meta-Llama-3-8B", parameters: 8.03e9, layers: 32, kvHeads: 8, headDim: 128, source: "meta-llama/Meta-Llama-3-8B config.json"),
        ModelArchitecture(name: "Mistral-7B-v0.1", parameters: 7.24e9, layers: 32, kvHeads: 8, headDim: 128, source: "mistralai/Mistral-7B-v0.1 config.json"),
        ModelArchitecture(name: "Mixtral-8x7B-Instruct-v0.1", parameters: 46.7e9, layers: 32, kvHeads: 8, headDim: 128, source: "mistralai/Mixtral-8x7B-Instruct-v0.1 config.json"),
        ModelArchitecture(name: "gemma-2b", parameters: 2.51e9, layers: 18, kvHeads: 1, headDim: 256, source: "google/gemma-2b config.json"),
        ModelArchitecture(name: "opt-350m", parameters: 0.331e9, layers: 24, kvHeads: 16, headDim: 64, source: "facebook/opt-350m config.json"),
        ModelArchitecture(name: "phi-2", parameters: 2.78e9, layers: 32, kvHeads: 32, headDim: 80, source: "microsoft/phi-2 config.json"),
    ]

    /// Looks a model up ignoring case and the `-hf` suffix of Hugging Face repository names.
    public static func model(named name: String) -> ModelArchitecture? {
        let key = canonicalName(name).lowercased()
        return models.first { $0.name.lowercased() == key }
    }

    /// The name rows are stored under: published names without the `-hf` suffix.
    public static func canonicalName(_ name: String) -> String {
        var n = name.trimmingCharacters(in: .whitespaces)
        if n.lowercased().hasSuffix("-hf") { n.removeLast(3) }
        return n
    }
}

