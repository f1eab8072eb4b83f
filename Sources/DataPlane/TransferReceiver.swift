import Protocol

/// The receiving side of one transfer: a pure state machine. The shell hands it each chunk's
/// header with the payload's length and the checksum it computed; the machine says whether to
/// deliver the bytes to the feature, when to grant credit back, and when the transfer is complete
/// or has failed (and what to tell the sender).
///
/// Credits are granted back only for chunks delivered (consumed), in batches of `creditBatch`, so
/// a slow consumer slows the sender instead of piling bytes up in memory.
public struct TransferReceiver: Sendable {
    public enum Directive: Equatable, Sendable {
        /// Hand the payload to the feature: it is chunk `index`, at `offset`.
        case deliver(index: UInt64, offset: Int)
        case sendCredit(credits: Int, consumed: UInt64)
        case sendComplete(bytes: Int)
        case sendError(TransferError)
        case completed(bytes: Int)
        case failed(DataPlaneError)
    }

    public let sender: String
    public let id: UInt64
    public let totalBytes: Int
    public let chunkBytes: Int
    public let window: Int
    public let timeoutNanos: Int64
    public private(set) var nextIndex: UInt64 = 0
    public private(set) var bytesReceived = 0
    /// Chunks received beyond what was granted would mean the sender ignored flow control.
    private var granted: Int
    private var creditOwed = 0
    private let creditBatch: Int
    private var lastHeard: Int64
    public private(set) var finished = false

    public var chunkCount: UInt64 { UInt64((totalBytes + chunkBytes - 1) / max(chunkBytes, 1)) }

    /// Validates an offer; nil with the reason when it cannot be taken as offered.
    public static func problem(with offer: TransferOffer, maxChunkBytes: Int, maxTotalBytes: Int) -> String? {
        if offer.chunkBytes == 0 { return "chunk_bytes is 0" }
        if Int(offer.chunkBytes) > maxChunkBytes { return "chunk_bytes \(offer.chunkBytes) is over this receiver's limit of \(maxChunkBytes)" }
        if offer.totalBytes > UInt64(maxTotalBytes) { return "total_bytes \(offer.totalBytes) is over this receiver's limit of \(maxTotalBytes)" }
        return nil
    }

    public init(sender: String, id: UInt64, offer: TransferOffer, window: Int, timeoutNanos: Int64, now: Int64) {
        self.sender = sender
        self.id = id
        self.totalBytes = Int(offer.totalBytes)
        self.chunkBytes = Int(offer.chunkBytes)
        self.window = max(1, window)
        self.granted = max(1, window)
        self.creditBatch = max(1, window / 4)
        self.timeoutNanos = timeoutNanos
        self.lastHeard = now
    }

    /// Accepted: nothing to wait for when the transfer is empty.
    public mutating func accepted(now: Int64) -> [Directive] {
        guard totalBytes == 0 else { return [] }
        finished = true
        return [.sendComplete(bytes: 0), .completed(bytes: 0)]
    }

    /// A chunk arrived. `payloadLength` and `payloadCRC` are the payload frame's, as received.
    public mutating func chunk(_ h: ChunkHeader, payloadLength: Int, payloadCRC: UInt32, now: Int64) -> [Directive] {
        guard !finished else { return [] }
        lastHeard = now
        if granted <= 0 {
            return fail(.flowControlViolation("chunk \(h.index) arrived with no credit outstanding (window \(window))"), index: h.index)
        }
        let expectedOffset = Int(nextIndex) * chunkBytes
        let expectedLength = min(chunkBytes, totalBytes - expectedOffset)
        guard h.index == nextIndex, Int(h.offset) == expectedOffset else {
            return fail(.outOfOrder("expected chunk \(nextIndex) at offset \(expectedOffset), got chunk \(h.index) at \(h.offset)"), index: h.index)
        }
        guard Int(h.length) == expectedLength, payloadLength == expectedLength else {
            return fail(.outOfOrder("chunk \(h.index) should be \(expectedLength) bytes; header says \(h.length), payload has \(payloadLength)"), index: h.index)
        }
        guard payloadCRC == h.crc32C else {
            return fail(.checksumMismatch(chunk: h.index, expected: h.crc32C, got: payloadCRC), index: h.index)
        }
        granted -= 1
        nextIndex += 1
        bytesReceived += payloadLength
        var out: [Directive] = [.deliver(index: h.index, offset: expectedOffset)]
        if nextIndex == chunkCount {
            finished = true
            out += [.sendComplete(bytes: totalBytes), .completed(bytes: totalBytes)]
        } else {
            // The shell delivers before it acts on the next directive, so this credit is for a
            // consumed chunk.
            creditOwed += 1
            let remaining = Int(chunkCount - nextIndex)
            if creditOwed >= creditBatch || granted == 0 || creditOwed >= remaining {
                let give = creditOwed
                creditOwed = 0
                granted += give
                out.append(.sendCredit(credits: give, consumed: nextIndex))
            }
        }
        return out
    }

    /// The sender reported an error (it gave up, or refused our credit).
    public mutating func peerError(_ e: TransferError) -> [Directive] {
        guard !finished else { return [] }
        finished = true
        return [.failed(DataPlaneError.fromWire(e))]
    }

    /// The receiving feature refused the contents of chunk `index`: the transfer fails on both sides.
    /// Called while the chunk's delivery is carried out, so also for the last chunk, whose
    /// completion the shell then does not send.
    public mutating func rejected(_ why: String, index: UInt64) -> [Directive] {
        fail(.rejected(why), index: index)
    }

    public mutating func tick(now: Int64, peer: String) -> [Directive] {
        guard !finished, now - lastHeard >= timeoutNanos else { return [] }
        finished = true
        return [.failed(.peerUnreachable(endpoint: peer, silenceMs: (now - lastHeard) / 1_000_000))]
    }

    private mutating func fail(_ e: DataPlaneError, index: UInt64) -> [Directive] {
        finished = true
        var te = TransferError(); te.code = e.code; te.message = e.wireMessage; te.chunkIndex = index
        return [.sendError(te), .failed(e)]
    }
}
