/// The prefix cache a replica keeps in its own GPU memory (vLLM's automatic prefix caching): the
/// KV of prompts it prefilled stays in blocks that are free until they are needed, so a request
/// whose prompt starts with chunks prefilled here skips them with no load at all. What survives
/// is bounded by the engine's free blocks at each lookup, oldest use evicted first. Pure: the GPU
/// agent's replicas and the twin's use it alike.
public struct GPUPrefixCache: Sendable {
    /// Chunk key → last use.
    private var lastUse: [String: UInt64] = [:]
    private var tick: UInt64 = 0
    public private(set) var chunkTokens = 0
    public init() {}

    public var count: Int { lastUse.count }

    /// A prompt's whole chunks are prefilled here.
    public mutating func insert(_ keys: [String], chunkTokens: Int) {
        guard chunkTokens > 0 else { return }
        self.chunkTokens = chunkTokens
        for k in keys { tick += 1; lastUse[k] = tick }
    }

    /// Keeps at most `tokens` tokens' worth of chunks (the engine's free blocks), oldest use out first.
    public mutating func trim(toTokens tokens: Int) {
        guard chunkTokens > 0 else { return }
        let keep = max(0, tokens / chunkTokens)
        guard lastUse.count > keep else { return }
        for (k, _) in lastUse.sorted(by: { $0.value < $1.value }).prefix(lastUse.count - keep) { lastUse[k] = nil }
    }

    /// How many of `keys` are held from the start (each key names its whole prefix); those are used now.
    public mutating func longest(_ keys: [String]) -> Int {
        var n = 0
        while n < keys.count, lastUse[keys[n]] != nil { n += 1 }
        for k in keys.prefix(n) { tick += 1; lastUse[k] = tick }
        return n
    }
}
