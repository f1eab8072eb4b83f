import Foundation

/// The report's memory-tiers section: how much prompt KV came from the memory hosts' tiers instead
/// of prefill, bytes moved per tier, the policy's decisions, and each host tier's own figures.
enum OffloadSection {
    static func html(_ s: ExperimentSummary, esc: (String) -> String) -> String {
        let o = s.offload
        guard o.known, o.lookups > 0 else { return "" }
        func mib(_ b: Int) -> String { String(format: "%.1f", Double(b) / 1_048_576) }
        var out = "<h2>KV prefixes on memory tiers</h2><p>Offload policy <b>\(esc(s.offloadPolicy))</b>. GPU agents look each prompt's chained chunk keys up on the memory host that owns its first chunk, load the cached prefix over the data plane (real bytes at kv_bytes_scale "
            + (s.requests.kvBytesScale > 0 ? String(format: "1/%.0f", 1 / s.requests.kvBytesScale) : "0")
            + ", every byte checked) when the policy says it beats prefill, and store each prompt's whole chunks once it is prefilled. Load time in TTFT: the real bytes over the tier's and the link's bandwidth plus their latencies.</p>"
        out += "<table><tr><th>requests with prefix keys</th><th>loaded a prefix</th><th>prompt tokens from tiers</th><th>MiB loaded</th><th>MiB stored</th><th>chunks stored</th><th>fell back to prefill</th></tr>"
        out += "<tr><td>\(o.lookups)</td><td>\(o.hits)</td><td>" + String(format: "%.1f%%", o.hitRatio * 100) + " (\(o.hitTokens) of \(o.promptTokens))</td><td>\(mib(o.loadedBytes))</td><td>\(mib(o.storedBytes))</td><td>\(o.storedChunks)</td><td>\(o.fallbacks)</td></tr></table>"
        let tiers = Set(o.loadedByTier.keys).union(o.storedByTier.keys).sorted()
        if !tiers.isEmpty {
            out += "<table><tr><th>tier</th><th>MiB loaded from</th><th>MiB stored to</th></tr>"
            for t in tiers { out += "<tr><td>\(esc(t))</td><td>\(mib(o.loadedByTier[t] ?? 0))</td><td>\(mib(o.storedByTier[t] ?? 0))</td></tr>" }
            out += "</table>"
        }
        if !o.decisions.isEmpty {
            out += "<p>Policy decisions: " + esc(o.decisions.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")) + "</p>"
        }
        if !o.hostTiers.isEmpty { out += "<ul>" + o.hostTiers.map { "<li>\(esc($0))</li>" }.joined() + "</ul>" }
        return out
    }
}
