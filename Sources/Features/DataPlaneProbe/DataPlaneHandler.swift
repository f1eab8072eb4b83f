import Cluster
import DataPlane
import Foundation
import Protocol
import Wire

/// Feature "dataplane", agent side: owns the node's data-plane peer socket (polled by the agent
/// session, advertised at registration) for every feature that moves bulk bytes, and runs probes:
/// a `ProbeCommand` sends a deterministic pattern to a peer, whose handler verifies every byte;
/// the outcome is reported (key = probe id) until settled. Other features get `plane` and
/// register receivers for their own transfer kinds.
public final class DataPlaneHandler: FeatureHandler, AdvertisesDataEndpoint, DataPlaneReceiver {
    public static let feature = "dataplane"
    public static let probeKind = "probe"
    public var feature: String { DataPlaneHandler.feature }
    public let plane: DataPlane
    private let clock: Clock
    private var started: [String: (to: String, at: Int64, chunk: Int)] = [:]
    private var results: [String: ProbeResult] = [:]
    /// Incoming probes with a byte that differs from the pattern (the chunk CRCs guard the wire;
    /// this checks the whole path end to end).
    private var mismatched = Set<String>()
    /// Incoming probes that arrived whole with every byte as sent, and those that did not.
    public private(set) var probesVerified = 0
    public private(set) var probeMismatches = 0

    public init(plane: DataPlane, clock: Clock = SystemClock.shared) {
        self.plane = plane
        self.clock = clock
        plane.register(self, forKind: DataPlaneHandler.probeKind)
    }

    public var dataEndpoint: String { plane.endpoint }
    public var dataPublicKey: String? { plane.publicKey }
    public var sockets: [ZMQSocket] { plane.sockets }
    public func pump(wallNanos: Int64) { try? plane.pump() }
    public var nextPumpDue: Int64? { plane.nextDueNanos }
    public func shutdown() { plane.close() }

    /// The probe's bytes: a function of the offset alone, so the receiver checks each one.
    static func patternByte(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 13) }

    public func execute(_ body: [UInt8], commandID: UInt64, wallNanos: Int64) -> FeatureOutcome {
        guard let p = try? ProbeCommand(serializedBytes: body) else { return .refused("not a ProbeCommand") }
        guard !p.peerEndpoint.isEmpty else { return .refused("peer \(p.peerNode) has no data-plane endpoint") }
        if started[p.probeID] != nil || results[p.probeID] != nil { return FeatureOutcome(ok: true, detail: "probe \(p.probeID) already running") }
        let chunk = p.chunkBytes > 0 ? Int(p.chunkBytes) : plane.config.chunkBytes
        var buffer = [UInt8](repeating: 0, count: chunk)
        started[p.probeID] = (p.peerNode, clock.monotonicNanos(), chunk)
        do {
            try plane.send(to: PeerAddress(endpoint: p.peerEndpoint, publicKey: p.peerPublicKey.isEmpty ? nil : p.peerPublicKey),
                           kind: DataPlaneHandler.probeKind, meta: ["probe": p.probeID], totalBytes: Int(p.bytes), chunkBytes: chunk,
                           source: { offset, length, emit in
                               for i in 0..<length { buffer[i] = DataPlaneHandler.patternByte(offset + i) }
                               try buffer.withUnsafeBytes { try emit(UnsafeRawBufferPointer(rebasing: $0[0..<length])) }
                           },
                           done: { [weak self] outcome in self?.finish(p, outcome) })
        } catch {
            started[p.probeID] = nil
            return .refused("could not start the probe: \(error)")
        }
        return FeatureOutcome(ok: true, detail: "probe \(p.probeID): \(p.bytes) bytes to \(p.peerNode)")
    }

    private func finish(_ p: ProbeCommand, _ outcome: Result<Int, DataPlaneError>) {
        guard let s = started.removeValue(forKey: p.probeID) else { return }
        var r = ProbeResult()
        r.probeID = p.probeID; r.toNode = p.peerNode; r.chunkBytes = UInt32(s.chunk)
        r.seconds = Double(clock.monotonicNanos() - s.at) / 1e9
        switch outcome {
        case .success(let n):
            r.ok = true; r.bytes = UInt64(n); r.bytesPerSecond = Double(n) / max(r.seconds, 1e-9)
        case .failure(let e):
            r.ok = false; r.error = e.description
        }
        results[p.probeID] = r
    }

    public func reports(wallNanos: Int64) -> [FeatureReport] {
        results.sorted { $0.key < $1.key }.map { report(key: $0.key, $0.value) }
    }

    public func settle(_ keys: [String]) { for k in keys { results[k] = nil } }
    public func running() -> [String] { started.keys.sorted().map { "probe:" + $0 } }

    // MARK: Receiving probes

    public func shouldAccept(from sender: String, transfer: UInt64, offer: TransferOffer) -> String? { nil }

    public func consume(from sender: String, transfer: UInt64, offset: Int, bytes: UnsafeRawBufferPointer) throws {
        for (i, b) in bytes.enumerated() where b != DataPlaneHandler.patternByte(offset + i) {
            mismatched.insert("\(sender)/\(transfer)")
            break
        }
    }

    public func finished(from sender: String, transfer: UInt64, result: Result<Int, DataPlaneError>) {
        let bad = mismatched.remove("\(sender)/\(transfer)") != nil
        if bad { probeMismatches += 1 } else if case .success = result { probesVerified += 1 }
    }
}
