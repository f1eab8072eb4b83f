/// Where a migration stages a request's KV when its destination has no room yet: a memory host,
/// through the memory-tiers feature on the same node (`KVTierCache`), which the agent injects. The
/// destination then holds the request as if it had swapped it out to that host itself.
public protocol KVStaging: AnyObject {
    /// Whether a memory host is at hand to stage on.
    var canStage: Bool { get }
    /// Source: puts `blocks` (real bytes, in order) of `request` on a memory host under
    /// `keyPrefix` + block number, and its `state` (a `MigratingRequest`) under `keyPrefix` +
    /// "state", so a destination can take the request on from the host alone if the source dies
    /// before the hand-over; `done` gets where they are, or why not.
    func stage(keyPrefix: String, request: String, replica: String, blocks: [[UInt8]], state: [UInt8], done: @escaping (Result<StagedKV, StagingError>) -> Void)
    /// Destination: the state a source staged under `keyPrefix`, if a memory host has it.
    func stagedState(keyPrefix: String, done: @escaping (Result<[UInt8], StagingError>) -> Void)
    /// Where `blocks` blocks staged under `keyPrefix` for `replica` are (host, tier, modelled seconds).
    func locate(keyPrefix: String, blocks: Int, replica: String) -> StagedKV?
    /// Destination: `request` (already queued on `replica`'s engine as swapped out) has its KV at
    /// `staged`: fetch it when the engine asks. The reason when it cannot (the request is then
    /// recomputed).
    func adopt(_ staged: StagedKV, request: String, replica: String) -> String?
    /// Deletes what a memory host holds of a staging: all of it when it did not go through, the
    /// state alone once the destination has taken the request on (its blocks come back by swap-in).
    func discard(_ staged: StagedKV, stateOnly: Bool)
}

public struct StagingError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}

/// A request's KV staged on a memory host: the host, its tier, the keys (prefix + block number),
/// and the modelled trace seconds one way (real bytes over the tier and the KV link).
public struct StagedKV: Sendable, Equatable {
    public var host: String
    public var tier: String
    public var keyPrefix: String
    public var blocks: Int
    public var seconds: Double
    public init(host: String, tier: String, keyPrefix: String, blocks: Int, seconds: Double) {
        self.host = host; self.tier = tier; self.keyPrefix = keyPrefix; self.blocks = blocks; self.seconds = seconds
    }
    public var keys: [String] { (0..<blocks).map { keyPrefix + "\($0)" } }
    public var stateKey: String { keyPrefix + "state" }

    /// In a data-plane offer's metadata.
    var meta: [String: String] {
        ["staged_host": host, "staged_tier": tier, "staged_prefix": keyPrefix, "staged_blocks": "\(blocks)", "staged_seconds": "\(seconds)"]
    }
    init?(meta m: [String: String]) {
        guard let host = m["staged_host"], !host.isEmpty, let tier = m["staged_tier"], let prefix = m["staged_prefix"], !prefix.isEmpty,
              let blocks = m["staged_blocks"].flatMap(Int.init), blocks >= 0, let seconds = m["staged_seconds"].flatMap(Double.init), seconds >= 0 else { return nil }
        self.init(host: host, tier: tier, keyPrefix: prefix, blocks: blocks, seconds: seconds)
    }
}
