import Protocol

/// The sending side of one transfer: a pure state machine (no sockets, no clock reads; time comes
/// in as monotonic nanoseconds). The shell feeds it the receiver's frames and ticks, and carries
/// out the directives it returns: send the offer, send chunk i (the shell reads the bytes and
/// computes their checksum), report the outcome.
///
/// Flow control: it never has more chunks sent-but-not-credited than the receiver granted, so the
/// bytes in flight are bounded by `credits × chunkBytes` whatever the receiver's speed.
public struct TransferSender: Sendable {
    public enum Phase: Equatable, Sendable { case offering, sending, awaitingCompletion, completed, failed(DataPlaneError) }

    public enum Directive: Equatable, Sendable {
        case sendOffer(TransferOffer)
        case sendChunk(index: UInt64, offset: Int, length: Int)
        case completed(bytes: Int)
        case failed(DataPlaneError)
    }

    public let id: UInt64
    public let totalBytes: Int
    public let chunkBytes: Int
    public let offer: TransferOffer
    public let peerEndpoint: String
    public let timeoutNanos: Int64
    public private(set) var phase: Phase = .offering
    /// Chunks we may still send before the receiver grants more.
    public private(set) var credits = 0
    public private(set) var nextIndex: UInt64 = 0
    /// Sent and not yet credited back: what the flow-control bound is about.
    public private(set) var inFlight = 0
    public private(set) var maxInFlight = 0
    private var lastHeard: Int64
    /// When the offer was last sent (re-sent while unanswered: the peer may not be connected yet).
    private var offerSentAt: Int64 = .min

    public var chunkCount: UInt64 { UInt64((totalBytes + chunkBytes - 1) / max(chunkBytes, 1)) }
    public var isFinished: Bool { switch phase { case .completed, .failed: return true; default: return false } }

    public init(id: UInt64, totalBytes: Int, chunkBytes: Int, kind: String, meta: [String: String] = [:],
                peerEndpoint: String, timeoutNanos: Int64, now: Int64) {
        precondition(chunkBytes > 0 && totalBytes >= 0)
        self.id = id
        self.totalBytes = totalBytes
        self.chunkBytes = chunkBytes
        self.peerEndpoint = peerEndpoint
        self.timeoutNanos = timeoutNanos
        var o = TransferOffer()
        o.totalBytes = UInt64(totalBytes); o.chunkBytes = UInt32(chunkBytes); o.kind = kind; o.meta = meta
        self.offer = o
        self.lastHeard = now
    }

    public mutating func start(now: Int64) -> [Directive] {
        offerSentAt = now
        return [.sendOffer(offer)]
    }

    /// A frame from the receiver about this transfer.
    public mutating func received(_ frame: DataFrame, now: Int64) -> [Directive] {
        guard !isFinished else { return [] }
        lastHeard = now
        switch frame.body {
        case .accept(let a)?:
            guard phase == .offering else { return [] }   // a repeated accept for a re-sent offer
            credits = Int(a.credits)
            phase = .sending
            return sendWhatCreditsAllow()
        case .credit(let c)?:
            let granted = Int(c.credits)
            guard granted <= inFlight else {
                return fail(.flowControlViolation("receiver granted \(granted) credits back for \(inFlight) chunks in flight"))
            }
            credits += granted
            inFlight -= granted
            return sendWhatCreditsAllow()
        case .complete(let c)?:
            guard nextIndex == chunkCount, Int(c.bytes) == totalBytes else {
                return fail(.outOfOrder("receiver reported completion of \(c.bytes) bytes after \(nextIndex)/\(chunkCount) chunks"))
            }
            phase = .completed
            return [.completed(bytes: totalBytes)]
        case .error(let e)?:
            return fail(DataPlaneError.fromWire(e), tellPeer: false)
        default:
            return fail(.malformed("unexpected '\(String(describing: frame.body))' for a transfer being sent"))
        }
    }

    /// Timeouts: fails after `timeoutNanos` without a word from the receiver; re-sends an
    /// unanswered offer every 200 ms meanwhile (the first may have gone before the connection was up).
    public mutating func tick(now: Int64) -> [Directive] {
        guard !isFinished else { return [] }
        if now - lastHeard >= timeoutNanos {
            return fail(.peerUnreachable(endpoint: peerEndpoint, silenceMs: (now - lastHeard) / 1_000_000), tellPeer: false)
        }
        if phase == .offering && now - offerSentAt >= 200_000_000 {
            offerSentAt = now
            return [.sendOffer(offer)]
        }
        return []
    }

    /// The feature gives up on the transfer.
    public mutating func cancel(_ why: String) -> [Directive] {
        guard !isFinished else { return [] }
        return fail(.cancelled(why))
    }

    /// Set by `fail` when the peer should hear why (the shell sends a TransferError).
    public private(set) var errorForPeer: TransferError?

    private mutating func sendWhatCreditsAllow() -> [Directive] {
        var out: [Directive] = []
        while credits > 0 && nextIndex < chunkCount {
            let offset = Int(nextIndex) * chunkBytes
            out.append(.sendChunk(index: nextIndex, offset: offset, length: min(chunkBytes, totalBytes - offset)))
            nextIndex += 1
            credits -= 1
            inFlight += 1
            maxInFlight = max(maxInFlight, inFlight)
        }
        if nextIndex == chunkCount && phase == .sending { phase = .awaitingCompletion }
        return out
    }

    private mutating func fail(_ e: DataPlaneError, tellPeer: Bool = true) -> [Directive] {
        phase = .failed(e)
        if tellPeer {
            var te = TransferError(); te.code = e.code; te.message = e.wireMessage
            errorForPeer = te
        }
        return [.failed(e)]
    }
}
