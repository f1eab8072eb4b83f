import Foundation

/// The report's memory-tiers section: how much prompt KV came from the memory hosts' tiers instead
/// of prefill, bytes moved per tier, the policy's decisions, and each host tier's own figures.
enum OffloadSection {
    static func html(_ s: ExperimentSummary, esc: (String) -> String) -> String {
        weights(s, esc: esc) + prefixes(s, esc: esc)
    }

    /// Replicas whose model did not fit their GPUs: their offloaded layers' tier and stream.
    static func weights(_ s: ExperimentSummary, esc: (String) -> String) -> String {
        guard let ws = s.offload.weights, !ws.isEmpty else { return "" }
        var out = "<h2>Weights streamed from memory tiers</h2><p>Offload policy <b>\(esc(s.offloadPolicy))</b>. The layers that do not fit the GPU live on a memory host and are streamed every step, overlapped with compute (FlexGen-style): a step takes the longer of its compute (Vidur's profile) and the stream (the layers' model bytes over the tier's measured bandwidth and the link, plus latencies). Each engine step also fetches the layers' real bytes from the host at the stated scale, every byte checked. Emulated.</p>"
        out += "<table><tr><th>replica</th><th>node</th><th>host · tier</th><th>layers streamed</th><th>GB a step</th><th>stream s a step</th><th>steps</th><th>rounds of real bytes</th><th>MiB moved</th><th>shards put again</th><th>stalled s</th></tr>"
        for w in ws {
            out += "<tr><td>\(esc(w.replica))</td><td>\(esc(w.node))</td><td>\(esc(w.host.isEmpty ? "none (\(w.state))" : "\(w.host) · \(w.tier)"))</td><td>\(w.offloadedLayers) of \(w.residentLayers + w.offloadedLayers)</td>"
                + String(format: "<td>%.1f</td><td>%.3f</td><td>%d</td><td>%d</td><td>%.1f (1/%.0f)</td><td>%d</td><td>%.1f</td></tr>", w.gbPerStep, w.streamSeconds, w.steps, w.rounds,
                         Double(w.bytesStreamed) / 1_048_576, w.bytesScale > 0 ? 1 / w.bytesScale : 0, w.reputs, w.stalledSeconds)
        }
        out += "</table>"
        if let t = s.requests.outputTokensPerSecond { out += String(format: "<p>Throughput: %.2f output tokens per trace second.</p>", t) }
        return out
    }

    static func prefixes(_ s: ExperimentSummary, esc: (String) -> String) -> String {
        let o = s.offload
        guard o.known, o.prefixRequests > 0 else { return "" }
        func mib(_ b: Int) -> String { String(format: "%.1f", Double(b) / 1_048_576) }
        var out = "<h2>KV prefixes on memory tiers</h2><p>Offload policy <b>\(esc(s.offloadPolicy))</b>. GPU agents look each prompt's chained chunk keys up on the memory host that owns its first chunk, load the cached prefix over the data plane (real bytes at kv_bytes_scale "
            + (s.requests.kvBytesScale > 0 ? String(format: "1/%.0f", 1 / s.requests.kvBytesScale) : "0")
            + ", every byte checked) when the policy says it beats prefill, and store each prompt's whole chunks once it is prefilled. Load time in TTFT: the real bytes over the tier's and the link's bandwidth plus their latencies.</p>"
        out += "<p>Each replica also keeps prompts' KV in its free GPU blocks (automatic prefix caching, as vLLM): \(o.gpuHits ?? 0) requests found their prefix there (\(o.gpuHitTokens ?? 0) prompt tokens skipped, no load)"
            + (o.prefixRouted.map { "; cache-aware routing sent \($0) requests to the replica last given their prefix, within a load slack of the least loaded" } ?? "; routing by shortest queue only") + ".</p>"
        out += "<table><tr><th>requests looked up on a tier</th><th>loaded a prefix</th><th>prompt tokens from GPU cache and tiers</th><th>MiB loaded</th><th>MiB stored</th><th>chunks stored</th><th>fell back to prefill</th></tr>"
        out += "<tr><td>\(o.lookups)</td><td>\(o.hits)</td><td>" + String(format: "%.1f%%", o.hitRatio * 100) + " (\(o.hitTokens + (o.gpuHitTokens ?? 0)) of \(o.promptTokens + (o.gpuPromptTokens ?? 0)))</td><td>\(mib(o.loadedBytes))</td><td>\(mib(o.storedBytes))</td><td>\(o.storedChunks)</td><td>\(o.fallbacks)</td></tr></table>"
        let tiers = Set(o.loadedByTier.keys).union(o.storedByTier.keys).sorted()
        if !tiers.isEmpty {
            out += "<table><tr><th>tier</th><th>MiB loaded from</th><th>MiB stored to</th></tr>"
            for t in tiers { out += "<tr><td>\(esc(t))</td><td>\(mib(o.loadedByTier[t] ?? 0))</td><td>\(mib(o.storedByTier[t] ?? 0))</td></tr>" }
            out += "</table>"
        }
        if !o.decisions.isEmpty {
            out += "<p>Policy decisions: " + esc(o.decisions.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")) + "</p>"
        }
        if let w = o.swaps {
            out += "<p>KV swap to memory hosts (preemption): \(w.outs) requests swapped out, \(w.ins) swapped back in without recompute"
                + " (\(mib(w.bytesOut)) MiB out, \(mib(w.bytesIn)) MiB in at kv_bytes_scale;" + String(format: " %.2f s of modelled transfer)", w.seconds)
                + ", \(w.fallbacks) recomputed after their KV was lost, \(w.declined) recomputed because the policy judged it faster.</p>"
        }
        if !o.hostTiers.isEmpty { out += "<ul>" + o.hostTiers.map { "<li>\(esc($0))</li>" }.joined() + "</ul>" }
        return out
    }
}
