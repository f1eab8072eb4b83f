import DataPlane
import Protocol
import Scheduling

// Short names for the tiers feature's messages (tiers.proto), kept with the feature.
public typealias TierPutHeader = Stratolab_V1_TierPutHeader
public typealias TierGetRequest = Stratolab_V1_TierGetRequest
public typealias TierBlockMeta = Stratolab_V1_TierBlockMeta
public typealias TierDataHeader = Stratolab_V1_TierDataHeader
public typealias TierStat = Stratolab_V1_TierStat
public typealias TierStats = Stratolab_V1_TierStats
public typealias TiersApiRequest = Stratolab_V1_TiersApiRequest
public typealias TiersApiReply = Stratolab_V1_TiersApiReply
public typealias HostTiers = Stratolab_V1_HostTiers
public typealias TierCommand = Stratolab_V1_TierCommand
public typealias TierConfig = Stratolab_V1_TierConfig
public typealias MemoryHostAddress = Stratolab_V1_MemoryHostAddress
public typealias TierFigure = Stratolab_V1_TierFigure
public typealias KVCacheStats = Stratolab_V1_KVCacheStats
public typealias GpuKVCache = Stratolab_V1_GpuKVCache
public typealias WeightStreamStats = Stratolab_V1_WeightStreamStats

extension MemoryHostAddress {
    /// The host's data plane, as a GPU agent reaches it.
    var peer: PeerAddress { PeerAddress(endpoint: endpoint, publicKey: publicKey.isEmpty ? nil : publicKey) }
    /// Its tiers' figures as it registered them, for the offload policy.
    var tierFigures: [TierFigures] { tiers.map { TierFigures(kind: $0.kind, bandwidthBytesPerSecond: $0.bandwidthGbps * 1e9, latencySeconds: $0.latencyNs * 1e-9) } }
}
