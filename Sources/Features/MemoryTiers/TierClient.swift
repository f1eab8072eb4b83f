import Cluster
import DataPlane
import Foundation
import Protocol

/// The client side of feature "tiers": puts blocks on a memory host and gets them back (or the
/// longest cached prefix of a chain of keys) over this node's data plane. Used by GPU agents and
/// the benchmark; every callback runs on the plane's thread. A get the host never answers (it
/// died, or dropped the request) fails after `timeoutNanos`, so the caller can recompute.
public final class TierClient: DataPlaneReceiver {
    public struct Fetched {
        public var header: TierDataHeader
        /// The blocks' bytes back to back, in the header's order.
        public var data: [UInt8]
        /// Where each block lies in `data`.
        public var ranges: [Range<Int>]
        /// From the get's start to the last byte here (monotonic seconds).
        public var seconds: Double
        public func bytes(_ i: Int) -> ArraySlice<UInt8> { data[ranges[i]] }
    }

    public enum ClientError: Error, CustomStringConvertible {
        case timedOut(String, Double), refused(String, String), transfer(String, DataPlaneError)
        public var description: String {
            switch self {
            case let .timedOut(host, s): return "memory host \(host) did not answer within \(String(format: "%.1f", s)) s"
            case let .refused(host, why): return "memory host \(host) refused: \(why)"
            case let .transfer(host, e): return "transfer with memory host \(host) failed: \(e)"
            }
        }
    }

    private let plane: DataPlane
    private let clock: Clock
    public var timeoutNanos: Int64 = 5_000_000_000
    private struct Pending {
        let host: String
        let started: Int64
        let done: (Result<Fetched, ClientError>) -> Void
        var header: TierDataHeader?
        var data: [UInt8] = []
        /// Streaming: bytes go to the sink as they arrive (block index, offset in it, bytes).
        var sink: ((Int, Int, UnsafeRawBufferPointer) -> Void)?
        var starts: [Int] = []
        /// Only which keys are held was asked: the answer lists sizes and carries no bytes.
        var existsOnly = false
    }
    private var pending: [String: Pending] = [:]
    private var inbound: [String: String] = [:]   // "sender/transfer" → request id
    private var serial: UInt64 = 0
    public private(set) var problems: [String: Int] = [:]

    public init(plane: DataPlane, clock: Clock = SystemClock.shared) {
        self.plane = plane
        self.clock = clock
        plane.register(self, forKind: TierStoreHandler.dataKind)
    }

    public var inFlight: Int { pending.count }

    private func nextID() -> String { serial += 1; return "\(plane.config.nodeID)-\(serial)" }

    /// Stores `blocks` on the host (fastest tier first, or from `tier` down); `done` gets the
    /// bytes sent, or the host's refusal (over capacity, too large, disk full).
    @discardableResult
    public func put(_ blocks: [(key: String, bytes: [UInt8])], to host: PeerAddress, tier: TierKind? = nil,
                    done: @escaping (Result<Int, DataPlaneError>) -> Void) throws -> String {
        var h = TierPutHeader()
        h.requestID = nextID()
        h.keys = blocks.map(\.key)
        h.sizes = blocks.map { UInt64($0.bytes.count) }
        h.tier = tier?.rawValue ?? ""
        try BlockBatch.send(blocks.map(\.bytes), header: try h.serializedData().base64EncodedString(), kind: TierStoreHandler.putKind,
                            to: host, on: plane, done: done)
        return h.requestID
    }

    /// Asks the host for `keys` (with `prefixOnly`, up to the first it lacks); `done` gets the
    /// blocks found and the keys missing. With `into`, the bytes go there as they arrive (block
    /// index, offset within the block, bytes valid during the call; a GPU agent writes them into
    /// its KV blocks) and `Fetched.data` stays empty.
    @discardableResult
    public func get(_ keys: [String], from host: PeerAddress, prefixOnly: Bool = false, existsOnly: Bool = false, promote: Bool = true, take: Bool = false,
                    into sink: ((Int, Int, UnsafeRawBufferPointer) -> Void)? = nil,
                    done: @escaping (Result<Fetched, ClientError>) -> Void) throws -> String {
        var g = TierGetRequest()
        g.requestID = nextID()
        g.keys = keys
        g.prefixOnly = prefixOnly
        g.existsOnly = existsOnly
        g.noPromote = !promote
        g.take = take
        g.replyEndpoint = plane.endpoint
        g.replyPublicKey = plane.publicKey ?? ""
        let id = g.requestID
        pending[id] = Pending(host: host.endpoint, started: clock.monotonicNanos(), done: done, sink: sink, existsOnly: existsOnly)
        do {
            try plane.send(to: host, kind: TierStoreHandler.getKind, meta: ["header": try g.serializedData().base64EncodedString()], totalBytes: 0,
                           source: { _, _, _ in }, done: { [weak self] r in
                               guard let self, case .failure(let e) = r, let p = self.pending.removeValue(forKey: id) else { return }
                               p.done(.failure(e.isRejection ? .refused(p.host, "\(e)") : .transfer(p.host, e)))
                           })
        } catch {
            pending[id] = nil
            throw error
        }
        return id
    }

    /// Fails gets that have waited longer than the timeout; call it now and then (the plane's pump does not).
    public func expire() {
        let now = clock.monotonicNanos()
        for (id, p) in pending where now - p.started > timeoutNanos {
            pending[id] = nil
            inbound = inbound.filter { $0.value != id }
            p.done(.failure(.timedOut(p.host, Double(timeoutNanos) / 1e9)))
        }
    }

    public var nextExpiry: Int64? { pending.values.map(\.started).min().map { $0 + timeoutNanos } }

    // MARK: Answers

    public func shouldAccept(from sender: String, transfer: UInt64, offer: TransferOffer) -> String? {
        guard let b64 = offer.meta["header"], let raw = Data(base64Encoded: b64), let h = try? TierDataHeader(serializedBytes: raw) else {
            problems["malformed", default: 0] += 1
            return "tier-data needs a TierDataHeader in meta[\"header\"]"
        }
        guard var p = pending[h.requestID] else {
            problems["unknown-request", default: 0] += 1
            return "no get '\(h.requestID)' is waiting here (it timed out, or was never asked)"
        }
        let sum = p.existsOnly ? 0 : h.blocks.reduce(0) { $0 + Int($1.bytes) }
        guard sum == Int(offer.totalBytes) else {
            problems["malformed", default: 0] += 1
            return "the blocks add to \(sum) bytes but the transfer has \(offer.totalBytes)"
        }
        p.header = h
        if p.sink == nil { p.data = [UInt8](repeating: 0, count: sum) }
        var at = 0
        p.starts = h.blocks.map { b in defer { at += Int(b.bytes) }; return at }
        pending[h.requestID] = p
        inbound["\(sender)/\(transfer)"] = h.requestID
        return nil
    }

    public func consume(from sender: String, transfer: UInt64, offset: Int, bytes: UnsafeRawBufferPointer) throws {
        // No copy of the pending get is held while its buffer is written: a second reference
        // to the buffer would make every chunk copy the whole buffer first.
        guard let id = inbound["\(sender)/\(transfer)"], pending[id] != nil else { return }
        if let sink = pending[id]!.sink {
            let starts = pending[id]!.starts
            // Split at block boundaries.
            var at = 0
            var i = (starts.lastIndex { $0 <= offset }) ?? 0
            while at < bytes.count, i < starts.count {
                let end = i + 1 < starts.count ? starts[i + 1] : offset + bytes.count
                let within = offset + at - starts[i]
                let n = min(bytes.count - at, end - (offset + at))
                if n > 0 { sink(i, within, UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)])) }
                at += max(n, 0); i += 1
            }
            return
        }
        pending[id]!.data.withUnsafeMutableBytes { d in
            _ = memcpy(d.baseAddress! + offset, bytes.baseAddress!, bytes.count)
        }
    }

    public func finished(from sender: String, transfer: UInt64, result: Result<Int, DataPlaneError>) {
        guard let id = inbound.removeValue(forKey: "\(sender)/\(transfer)"), let p = pending.removeValue(forKey: id) else { return }
        switch result {
        case .failure(let e): p.done(.failure(.transfer(p.host, e)))
        case .success:
            let h = p.header!
            var ranges: [Range<Int>] = []
            var at = 0
            for b in h.blocks where !p.existsOnly { ranges.append(at..<(at + Int(b.bytes))); at += Int(b.bytes) }
            p.done(.success(Fetched(header: h, data: p.data, ranges: ranges, seconds: Double(clock.monotonicNanos() - p.started) / 1e9)))
        }
    }
}

extension DataPlaneError {
    /// The receiver refused the transfer or its contents (as opposed to a broken link).
    var isRejection: Bool {
        switch self {
        case .refused, .rejected: return true
        default: return false
        }
    }
}
