import Cluster
import DataPlane
import Foundation
import Logging
import Protocol
import Wire

/// Feature "tiers", memory-host side: serves the host's `TieredBlockStore` over the data plane
/// (puts, gets and prefix lookups from any number of GPU agents at once; see tiers.proto) and
/// reports the store's telemetry about once a second.
///
/// An emulated tier's throttle is not waited out on the session's thread: the time it adds is
/// owed, and the answer to a get goes out once it is due. Nor is the disk: when the NVMe tier
/// reads on its own thread, a get's NVMe blocks are read there and the answer is put together
/// when they are in (the session goes on heartbeating meanwhile).
public final class TierStoreHandler: FeatureHandler, DataPlaneReceiver {
    public static let feature = "tiers"
    public static let putKind = "tier-put", getKind = "tier-get", dataKind = "tier-data"
    public var feature: String { TierStoreHandler.feature }
    /// Keys a get may name.
    public static let maxKeysPerGet = 65_536

    public let store: TieredBlockStore
    private let plane: DataPlane
    private var clock: Clock = SystemClock.shared
    private var logger = Logger(label: "strato.tiers")
    /// Probed figures per tier (CXL's are the emulated ones), stated in the telemetry.
    private let probed: [TierKind: (bandwidthGBps: Double, latencyNs: Double)]
    public let recoveredBlocks: Int

    private struct InboundPut {
        let header: TierPutHeader
        let tier: TierKind?
        var index = 0          // the block being filled
        var block: [UInt8] = []
        var filled = 0
    }
    private var puts: [String: InboundPut] = [:]   // by "sender/transfer"
    private var gets: [String: TierGetRequest] = [:]
    /// Answers held until an emulated tier's access time has passed (monotonic nanos).
    private var due: [(at: Int64, send: () -> Void)] = []
    private var owed = 0.0
    /// Gets waiting for the NVMe reader thread, by its batch id.
    private var reading: [UInt64: (get: TierGetRequest, sender: String, since: Int64)] = [:]
    private var nvmeReader: FileTier? { store.tiers.lazy.compactMap { $0.backend as? FileTier }.first { $0.readsDetached } }
    public private(set) var getsServed = 0, putsStored = 0
    /// Problems counted by name (malformed requests, refused puts, unreachable requesters), also logged.
    public private(set) var problems: [String: Int] = [:]
    private var statsSentAt: Int64 = 0

    public init(store: TieredBlockStore, plane: DataPlane, probed: [TierKind: (bandwidthGBps: Double, latencyNs: Double)] = [:]) {
        self.store = store
        self.plane = plane
        self.probed = probed
        self.recoveredBlocks = store.count
        plane.register(self, forKind: TierStoreHandler.putKind)
        plane.register(self, forKind: TierStoreHandler.getKind)
        store.pace = { [weak self] s in self?.owed += s }
    }

    public func attach(_ context: NodeContext) {
        clock = context.clock
        logger = context.logger
    }

    private func problem(_ kind: String, _ message: String) {
        problems[kind, default: 0] += 1
        if problems[kind]! <= 5 || problems[kind]! % 1000 == 0 { logger.warning("tiers: \(message)", metadata: ["kind": "\(kind)", "count": "\(problems[kind]!)"]) }
    }

    // MARK: Commands and reports

    /// Commands: only faults (blocks come over the data plane).
    public func execute(_ body: [UInt8], commandID: UInt64, wallNanos: Int64) -> FeatureOutcome {
        guard let c = try? TierCommand(serializedBytes: body) else { return .refused("not a TierCommand") }
        guard case .diskFault(let f)? = c.action else { return .refused("a memory host takes only disk faults; tier configs go to GPU agents") }
        guard let nvme = store.tiers.compactMap({ $0.backend as? FileTier }).first else { return .refused("this memory host has no NVMe tier to fill") }
        nvme.diskFullEmulated = f.full
        logger.warning("tiers: \(f.full ? "NVMe tier's disk is full (emulated fault): writes fail as tier-full, blocks demoted there are dropped" : "NVMe tier's disk has room again")")
        return FeatureOutcome(ok: true, detail: f.full ? "NVMe tier's disk full (emulated)" : "NVMe tier's disk free again")
    }

    public func reports(wallNanos: Int64) -> [FeatureReport] {
        let now = clock.monotonicNanos()
        guard now - statsSentAt >= 1_000_000_000 else { return [] }
        statsSentAt = now
        return [report(key: "stats", stats())]
    }

    public func settle(_ keys: [String]) {}

    /// The store's telemetry as the wire carries it.
    public func stats() -> TierStats {
        var s = TierStats()
        s.tiers = store.tiers.map { t in
            var x = TierStat()
            x.kind = t.kind.rawValue
            x.label = t.backend.label
            x.emulated = t.backend.emulated
            x.capacityBytes = UInt64(t.capacity); x.usedBytes = UInt64(t.used); x.blocks = UInt64(t.blocks)
            let c = t.counters
            x.puts = UInt64(c.puts); x.hits = UInt64(c.hits); x.evictions = UInt64(c.evictions); x.demotions = UInt64(c.demotions)
            x.promotions = UInt64(c.promotions); x.dropped = UInt64(c.dropped)
            x.bytesWritten = UInt64(c.bytesWritten); x.bytesRead = UInt64(c.bytesRead); x.seconds = c.seconds
            if let p = probed[t.kind] { x.probedBandwidthGbps = p.bandwidthGBps; x.probedLatencyNs = p.latencyNs }
            return x
        }
        s.misses = UInt64(store.misses)
        s.errors = Dictionary(uniqueKeysWithValues: store.errors.map { ($0.key.rawValue, UInt64($0.value)) })
        for (k, v) in problems { s.errors[k, default: 0] += UInt64(v) }
        for case let f as FileTier in store.tiers.map(\.backend) where f.writeBehindFailures > 0 {
            s.errors["nvme-write-failed", default: 0] += UInt64(f.writeBehindFailures)
        }
        s.evictionPolicy = store.policyName
        s.recoveredBlocks = UInt64(recoveredBlocks)
        s.gets = UInt64(getsServed); s.puts = UInt64(putsStored)
        return s
    }

    /// Bytes used per tier (the node's telemetry).
    public func used(_ kind: TierKind) -> UInt64 { UInt64(store.tiers.first { $0.kind == kind }?.used ?? 0) }

    public var isPumped: Bool { true }
    public func pump(wallNanos: Int64) {
        if !reading.isEmpty, let reader = nvmeReader {
            for batch in reader.finishedReads() {
                guard let r = reading.removeValue(forKey: batch.id) else { continue }
                compose(r.get, from: r.sender, since: r.since, nvme: Dictionary(batch.reads.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a }))
            }
        }
        guard !due.isEmpty else { return }
        let now = clock.monotonicNanos()
        let ready = due.filter { $0.at <= now }
        due.removeAll { $0.at <= now }
        for r in ready { r.send() }
    }
    public var nextPumpDue: Int64? {
        // Reads under way on the reader thread are looked for every millisecond (its completion
        // cannot wake the session's poll).
        let soonest = due.map(\.at).min()
        guard !reading.isEmpty else { return soonest }
        return min(soonest ?? .max, clock.monotonicNanos() + 1_000_000)
    }

    // MARK: Data plane

    public func shouldAccept(from sender: String, transfer: UInt64, offer: TransferOffer) -> String? {
        let key = "\(sender)/\(transfer)"
        guard let b64 = offer.meta["header"], let raw = Data(base64Encoded: b64) else {
            problem("malformed", "a \(offer.kind) transfer from \(sender) without a header")
            return "a \(offer.kind) transfer needs meta[\"header\"]"
        }
        if offer.kind == TierStoreHandler.getKind {
            guard let g = try? TierGetRequest(serializedBytes: raw) else { problem("malformed", "an undecodable get from \(sender)"); return "meta[\"header\"] is not a TierGetRequest" }
            guard !g.replyEndpoint.isEmpty else { problem("malformed", "a get from \(sender) without a reply endpoint"); return "a get needs reply_endpoint" }
            guard g.keys.count <= TierStoreHandler.maxKeysPerGet else { problem("malformed", "a get of \(g.keys.count) keys from \(sender)"); return "a get names at most \(TierStoreHandler.maxKeysPerGet) keys" }
            gets[key] = g
            return nil
        }
        guard let h = try? TierPutHeader(serializedBytes: raw) else { problem("malformed", "an undecodable put from \(sender)"); return "meta[\"header\"] is not a TierPutHeader" }
        guard h.keys.count == h.sizes.count, !h.keys.isEmpty else {
            problem("malformed", "a put from \(sender) with \(h.keys.count) keys and \(h.sizes.count) sizes")
            return "a put needs one size per key (got \(h.keys.count) keys, \(h.sizes.count) sizes)"
        }
        guard h.sizes.reduce(0, +) == offer.totalBytes else {
            problem("malformed", "a put from \(sender) whose sizes add to \(h.sizes.reduce(0, +)), not \(offer.totalBytes)")
            return "the sizes add to \(h.sizes.reduce(0, +)) bytes but the transfer has \(offer.totalBytes)"
        }
        var tier: TierKind?
        if !h.tier.isEmpty {
            guard let t = TierKind(rawValue: h.tier) else { problem("malformed", "a put from \(sender) to tier '\(h.tier)'"); return "unknown tier '\(h.tier)' (dram, cxl or nvme)" }
            tier = t
        }
        let largest = store.tiers.filter { tier == nil || $0.kind >= tier! }.map(\.capacity).max() ?? 0
        if let big = h.sizes.firstIndex(where: { $0 == 0 || $0 > UInt64(largest) }) {
            problem("too-large", "a put from \(sender) of block '\(h.keys[big])' with \(h.sizes[big]) bytes")
            return "block '\(h.keys[big])' has \(h.sizes[big]) bytes: blocks must have 1 to \(largest) bytes here"
        }
        puts[key] = InboundPut(header: h, tier: tier)
        return nil
    }

    public func consume(from sender: String, transfer: UInt64, offset: Int, bytes: UnsafeRawBufferPointer) throws {
        let key = "\(sender)/\(transfer)"
        // Taken out while it is filled, so its buffer has one owner (no copy on write).
        guard var p = puts.removeValue(forKey: key) else { return }
        var at = 0
        while at < bytes.count, p.index < p.header.keys.count {
            let size = Int(p.header.sizes[p.index])
            // Each block lands in a buffer of the store's (recycled memory), kept as it is.
            if p.filled == 0 { p.block = store.buffer(size) }
            let n = min(size - p.filled, bytes.count - at)
            p.block.withUnsafeMutableBytes { _ = memcpy($0.baseAddress! + p.filled, bytes.baseAddress! + at, n) }
            p.filled += n
            at += n
            if p.filled == size {
                do {
                    try store.put(p.header.keys[p.index], owned: p.block, tier: p.tier)
                    putsStored += 1
                } catch {
                    problem("put-refused", "block '\(p.header.keys[p.index])' from \(sender): \(error)")
                    throw error
                }
                p.block = []
                p.filled = 0
                p.index += 1
            }
        }
        puts[key] = p
    }

    public func finished(from sender: String, transfer: UInt64, result: Result<Int, DataPlaneError>) {
        let key = "\(sender)/\(transfer)"
        puts[key] = nil
        guard let g = gets.removeValue(forKey: key) else { return }
        guard case .success = result else { return }
        answer(g, from: sender)
    }

    /// Reads what a get names and sends it back to the requester, after the tiers' access time.
    /// Its NVMe blocks go to the reader thread first when the tier has one.
    private func answer(_ g: TierGetRequest, from sender: String) {
        let t0 = clock.monotonicNanos()
        if !g.existsOnly, let reader = nvmeReader {
            var onDisk: [String] = []
            for k in g.keys {
                if store.detachedReader(for: k) != nil { onDisk.append(k); store.touch(k) }
                else if g.prefixOnly && !store.exists(k) { break }   // the prefix ends here
            }
            if !onDisk.isEmpty, let id = reader.submitReads(onDisk) {
                reading[id] = (g, sender, t0)
                return
            }
        }
        compose(g, from: sender, since: t0, nvme: [:])
    }

    /// The answer to a get, `nvme` holding its blocks the reader thread read; sent after the
    /// tiers' access time.
    private func compose(_ g: TierGetRequest, from sender: String, since t0: Int64, nvme: [String: FileTier.DetachedRead]) {
        getsServed += 1
        var header = TierDataHeader()
        header.requestID = g.requestID
        var blocks: [[UInt8]] = []
        owed = 0
        for k in g.keys {
            if g.existsOnly {
                if let t = store.tier(of: k), let n = store.size(of: k) {
                    var m = TierBlockMeta(); m.key = k; m.bytes = UInt64(n); m.tier = t.rawValue
                    header.blocks.append(m)
                    if g.take { store.delete(k) }
                    continue
                }
            } else if let (bytes, t) = try? (nvme[k].map { try store.finishGet(k, read: $0.result, seconds: $0.seconds, promote: !g.noPromote && !g.take) }
                                                ?? store.get(k, promote: !g.noPromote && !g.take)) {
                var m = TierBlockMeta(); m.key = k; m.bytes = UInt64(bytes.count); m.tier = t.rawValue
                header.blocks.append(m)
                blocks.append(bytes)
                if g.take { store.delete(k) }
                continue
            }
            header.missing.append(k)
            if g.prefixOnly { break }
        }
        let readNanos = clock.monotonicNanos() - t0
        header.readSeconds = Double(readNanos) / 1e9 + owed
        let waitNanos = Int64(owed * 1e9)
        let reply = PeerAddress(endpoint: g.replyEndpoint, publicKey: g.replyPublicKey.isEmpty ? nil : g.replyPublicKey)
        let send = { [weak self] in
            guard let self else { return }
            do {
                try BlockBatch.send(blocks, header: (try? header.serializedData().base64EncodedString()) ?? "", kind: TierStoreHandler.dataKind,
                                    to: reply, on: self.plane, done: { [weak self] r in
                                        if case .failure(let e) = r { self?.problem("reply-failed", "answer to \(sender) for \(g.requestID): \(e)") }
                                    })
            } catch { self.problem("reply-failed", "could not answer \(sender) for \(g.requestID): \(error)") }
        }
        if waitNanos > 0 { due.append((clock.monotonicNanos() + waitNanos, send)) } else { send() }
    }
}

/// Blocks sent back to back in one transfer: each chunk is read straight from its block when it
/// lies within one (chunks are block-sized when the blocks are of one size), otherwise assembled.
enum BlockBatch {
    static func chunkBytes(_ blocks: [[UInt8]]) -> Int {
        if let s = blocks.first?.count, s >= 64 << 10, s <= 16 << 20, blocks.allSatisfy({ $0.count == s }) { return s }
        return 1 << 20
    }

    @discardableResult
    static func send(_ blocks: [[UInt8]], header: String, kind: String, to peer: PeerAddress, on plane: DataPlane,
                     done: @escaping (Result<Int, DataPlaneError>) -> Void) throws -> UInt64 {
        var starts: [Int] = []
        var total = 0
        for b in blocks { starts.append(total); total += b.count }
        // The block holding `offset`, and where in it (binary search over the starts).
        func locate(_ offset: Int) -> (block: Int, within: Int) {
            var lo = 0, hi = starts.count - 1
            while lo < hi { let mid = (lo + hi + 1) / 2; if starts[mid] <= offset { lo = mid } else { hi = mid - 1 } }
            return (lo, offset - starts[lo])
        }
        var scratch: [UInt8] = []
        return try plane.send(to: peer, kind: kind, meta: ["header": header], totalBytes: total, chunkBytes: chunkBytes(blocks), source: { offset, length, emit in
            // Only chunks spanning blocks come here (`shared` takes the others): assembled.
            var (i, at) = locate(offset)
            scratch.removeAll(keepingCapacity: true)
            while scratch.count < length {
                let n = min(blocks[i].count - at, length - scratch.count)
                scratch.append(contentsOf: blocks[i][at..<(at + n)])
                i += 1; at = 0
            }
            try scratch.withUnsafeBytes { try emit($0) }
        }, shared: { offset, length in
            // A chunk within one block goes from the block itself, without a copy.
            let (i, within) = locate(offset)
            return within + length <= blocks[i].count ? SharedChunk(blocks[i], within..<(within + length)) : nil
        }, done: done)
    }
}
