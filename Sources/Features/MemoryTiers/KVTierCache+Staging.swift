import DataPlane
import Foundation
import Protocol
import Scheduling

/// Migration staging (the migration feature's `KVStaging`): a request whose destination has no room
/// yet has its KV put on a memory host by the source's agent, and the destination's agent takes it
/// on as a request swapped out there, fetched back by the swap path (`KVTierCache+Swap`) as soon as
/// its engine has room. The tier is the one the offload policy swaps to, or the host's fastest.
extension KVTierCache: KVStaging {
    public var canStage: Bool { !config.hosts.isEmpty }

    /// The host and tier staged KV goes to, with the modelled seconds for `realBytes` one way.
    private func stagingTarget(keyPrefix: String, realBytes: Double) -> (host: MemoryHostAddress, tier: String, seconds: Double)? {
        guard let host = host(for: [keyPrefix]) else { return nil }
        let figures = host.tierFigures
        guard let tier = policy.swapTier(figures).tier.flatMap({ t in figures.first { $0.kind == t } })
                ?? figures.max(by: { ($0.bandwidthBytesPerSecond, $1.kind) < ($1.bandwidthBytesPerSecond, $0.kind) }) else { return nil }
        let seconds = PrefixChoice(tokens: 0, bytes: realBytes, tier: tier, linkBytesPerSecond: config.linkBytesPerSecond,
                                   linkLatencySeconds: config.linkLatencySeconds, recomputeSeconds: 0).loadSeconds
        return (host, tier.kind, seconds)
    }

    public func locate(keyPrefix: String, blocks: Int, replica: String) -> StagedKV? {
        guard let full = replicas.blockBytes(of: replica)?.full, let target = stagingTarget(keyPrefix: keyPrefix, realBytes: Double(blocks) * full) else { return nil }
        return StagedKV(host: target.host.node, tier: target.tier, keyPrefix: keyPrefix, blocks: blocks, seconds: target.seconds)
    }

    public func stage(keyPrefix: String, request: String, replica: String, blocks: [[UInt8]], state: [UInt8], done: @escaping (Result<StagedKV, StagingError>) -> Void) {
        guard replicas.blockBytes(of: replica) != nil else { done(.failure(StagingError("replica \(replica) is not serving here"))); return }
        guard let staged = locate(keyPrefix: keyPrefix, blocks: blocks.count, replica: replica), let host = host(for: [keyPrefix]) else {
            done(.failure(StagingError("no memory host in this testbed's tier configuration")))
            return
        }
        let peer = host.peer
        do {
            let items = Array(zip(staged.keys, blocks)).map { (key: $0.0, bytes: $0.1) } + [(key: staged.stateKey, bytes: state)]
            _ = try client.put(items, to: peer, tier: TierKind(rawValue: staged.tier)) { [weak self] r in
                switch r {
                case .success(let n):
                    self?.stats.stagedOuts += 1
                    self?.stats.stagedBytes += UInt64(max(0, n - state.count))   // the KV alone
                    done(.success(staged))
                case .failure(let e):
                    done(.failure(StagingError("putting \(blocks.count) blocks of \(request) on \(host.node) failed: \(e)")))
                }
            }
        } catch {
            done(.failure(StagingError("could not reach memory host \(host.node): \(error)")))
        }
    }

    public func stagedState(keyPrefix: String, done: @escaping (Result<[UInt8], StagingError>) -> Void) {
        guard let host = host(for: [keyPrefix]) else { done(.failure(StagingError("no memory host in this agent's tier configuration"))); return }
        let key = keyPrefix + "state"
        do {
            _ = try client.get([key], from: host.peer, promote: false) { r in
                switch r {
                case .success(let f) where f.header.blocks.map(\.key) == [key]: done(.success(Array(f.bytes(0))))
                case .success: done(.failure(StagingError("memory host \(host.node) holds no \(key)")))
                case .failure(let e): done(.failure(StagingError("asking memory host \(host.node) for \(key) failed: \(e)")))
                }
            }
        } catch {
            done(.failure(StagingError("could not reach memory host \(host.node): \(error)")))
        }
    }

    public func adopt(_ staged: StagedKV, request: String, replica: String) -> String? {
        guard let host = config.hosts.first(where: { $0.node == staged.host }) else {
            return "memory host \(staged.host) is not in this agent's tier configuration"
        }
        let now = traceNow(replica) ?? 0
        // Already out: the swap-in waits only for its way back.
        swaps[request] = SwapRecord(host: host, keys: staged.keys, tier: staged.tier, outAt: now - staged.seconds, seconds: staged.seconds,
                                    realBytes: Double(staged.blocks) * (replicas.blockBytes(of: replica)?.full ?? 0), putDone: true)
        stats.stagedIns += 1
        return nil
    }

    public func discard(_ staged: StagedKV, stateOnly: Bool) {
        guard let host = config.hosts.first(where: { $0.node == staged.host }) else { return }
        let peer = host.peer
        _ = try? client.get((stateOnly ? [] : staged.keys) + [staged.stateKey], from: peer, promote: false, take: true) { _ in }
    }
}
