import CZeroMQ
import Cluster
import DataPlane
import Foundation
import Protocol
import Wire

/// `strato bench dataplane`: bulk throughput of the data plane (chunked, flow-controlled, CRC-32C
/// per chunk, delivered into the receiver's memory) against raw libzmq moving the same bytes over
/// the same transport (DEALER → ROUTER over TCP loopback, no checksum, no copy out) and memcpy, in
/// one run, for several chunk sizes. Sender and receiver run on two threads of this process.
public enum DataPlaneBench {
    public struct Row {
        public var chunkBytes: Int
        public var memcpyGBps: Double
        public var rawZMQGBps: Double
        public var dataPlaneGBps: Double
        public var ratio: Double { dataPlaneGBps / rawZMQGBps }
    }

    public struct Figures {
        public var rows: [Row]
        public var totalBytes: Int
        public var window: Int
        public var curve: Bool
        public var hardwareCRC: Bool
        public var repeats: Int

        public var table: String {
            var s = """

            data-plane benchmark: \(totalBytes >> 20) MiB per run, window \(window) chunks, median of \(repeats), TCP loopback\(curve ? ", CURVE on" : ""); CRC-32C \(hardwareCRC ? "SSE4.2" : "table")
            CHUNK      MEMCPY GB/s   RAW LIBZMQ GB/s   DATA PLANE GB/s   RATIO (data plane / raw)

            """
            for r in rows {
                s += String(format: "%-10@ %11.2f   %15.2f   %15.2f   %6.2f\n", size(r.chunkBytes) as NSString, r.memcpyGBps, r.rawZMQGBps, r.dataPlaneGBps, r.ratio)
            }
            if let mib = rows.first(where: { $0.chunkBytes == 1 << 20 }) {
                s += "target ≥ 0.5× raw libzmq at 1 MiB chunks: \(mib.ratio >= 0.5 ? "met" : "NOT met") (\(String(format: "%.2f", mib.ratio))×)\n"
            }
            return s
        }

        private func size(_ b: Int) -> String { b >= 1 << 20 ? "\(b >> 20) MiB" : "\(b >> 10) KiB" }
    }

    public static func run(totalMiB: Int, chunkSizes: [Int], repeats: Int, window: Int, curve: Bool,
                           progress: (String) -> Void) throws -> Figures {
        let total = totalMiB << 20
        var rows: [Row] = []
        for chunk in chunkSizes {
            var mem: [Double] = [], raw: [Double] = [], dp: [Double] = []
            for i in 0..<repeats {
                mem.append(memcpyRate(total: total, chunk: chunk))
                raw.append(try rawZMQRate(total: total, chunk: chunk))
                dp.append(try dataPlaneRate(total: total, chunk: chunk, window: window, curve: curve))
                progress(String(format: "  chunk %7d B, run %d/%d: memcpy %.2f, raw libzmq %.2f, data plane %.2f GB/s",
                                chunk, i + 1, repeats, mem.last!, raw.last!, dp.last!))
            }
            rows.append(Row(chunkBytes: chunk, memcpyGBps: median(mem), rawZMQGBps: median(raw), dataPlaneGBps: median(dp)))
        }
        return Figures(rows: rows, totalBytes: total, window: window, curve: curve, hardwareCRC: CRC32C.usesHardware, repeats: repeats)
    }

    private static func median(_ v: [Double]) -> Double { let s = v.sorted(); return s[s.count / 2] }
    private static func gbps(_ bytes: Int, _ nanos: Int64) -> Double { Double(bytes) / Double(max(nanos, 1)) }

    /// Copying the same bytes chunk by chunk from one buffer into another.
    static func memcpyRate(total: Int, chunk: Int) -> Double {
        let src = [UInt8](repeating: 0xA5, count: chunk)
        var dst = [UInt8](repeating: 0, count: chunk)
        let t0 = SystemClock.shared.monotonicNanos()
        var moved = 0
        src.withUnsafeBytes { s in dst.withUnsafeMutableBytes { d in
            while moved < total { memcpy(d.baseAddress!, s.baseAddress!, chunk); moved += chunk }
        } }
        let dt = SystemClock.shared.monotonicNanos() - t0
        precondition(dst[chunk - 1] == 0xA5)
        return gbps(moved, dt)
    }

    /// libzmq alone: a DEALER sends `total` bytes in `chunk`-sized messages to a ROUTER, which
    /// receives each into a libzmq message and releases it (no copy, no checksum), then answers once.
    static func rawZMQRate(total: Int, chunk: Int) throws -> Double {
        let ctx = ZMQContext()
        defer { ctx.terminate() }
        let router = try ZMQSocket(ctx, .router)
        try router.bind("tcp://127.0.0.1:0")
        let endpoint = try router.lastEndpoint()
        let count = (total + chunk - 1) / chunk
        let receiverDone = DispatchSemaphore(value: 0)
        var elapsed: Int64 = 0
        let t = Thread {
            var got = 0
            var first: Int64 = 0
            while got < count {
                _ = try? router.receive { _ in if got == 0 { first = SystemClock.shared.monotonicNanos() }; got += 1 }
            }
            elapsed = SystemClock.shared.monotonicNanos() - first
            router.close()
            receiverDone.signal()
        }
        let dealer = try ZMQSocket(ctx, .dealer)
        try dealer.setHighWaterMarks(send: 1000, receive: 1000)
        try dealer.connect(endpoint)
        t.start()
        let payload = [UInt8](repeating: 0x5A, count: chunk)
        try payload.withUnsafeBytes { p in
            for _ in 0..<count { try dealer.send(buffers: [p]) }
        }
        receiverDone.wait()
        dealer.close()
        return gbps(count * chunk, elapsed)
    }

    /// Stratolab's data plane: one transfer of `total` bytes between two nodes' data planes, each
    /// on its own thread; the receiver verifies every chunk and copies it into its buffer.
    static func dataPlaneRate(total: Int, chunk: Int, window: Int, curve: Bool) throws -> Double {
        var keysA: CurveKeyPair?, keysB: CurveKeyPair?
        if curve { keysA = try CurveKeyPair.generate(); keysB = try CurveKeyPair.generate() }
        var rc = DataPlaneConfig(nodeID: "bench-receiver")
        rc.window = window; rc.chunkBytes = chunk; rc.keys = keysB
        if let a = keysA { rc.authorizedKeys = [a.publicKey] }
        let sink = BenchSink(capacity: chunk)
        let ready = DispatchSemaphore(value: 0)
        var endpoint = "", serverKey: String?
        var receiveError: Error?
        let t = Thread {
            do {
                let plane = try DataPlane(config: rc)
                plane.receiver = sink
                endpoint = plane.endpoint; serverKey = plane.publicKey
                ready.signal()
                try plane.run(until: { sink.result != nil }, timeoutNanos: 120_000_000_000)
                // Let the COMPLETE frame leave before the socket closes.
                try plane.run(until: { false }, timeoutNanos: 20_000_000)
                plane.close()
            } catch { receiveError = error; ready.signal() }
            sink.exited.signal()
        }
        t.start()
        ready.wait()
        if let e = receiveError { throw e }
        var sc = DataPlaneConfig(nodeID: "bench-sender")
        sc.window = window; sc.chunkBytes = chunk; sc.keys = keysA
        let plane = try DataPlane(config: sc)
        defer { plane.close() }
        let payload = [UInt8](repeating: 0x3C, count: chunk)
        var outcome: Swift.Result<Int, DataPlaneError>?
        let t0 = SystemClock.shared.monotonicNanos()
        try plane.send(to: PeerAddress(endpoint: endpoint, publicKey: serverKey), kind: "bench", totalBytes: total, chunkBytes: chunk,
                       source: { _, length, emit in try payload.withUnsafeBytes { try emit(UnsafeRawBufferPointer(rebasing: $0[0..<length])) } },
                       done: { outcome = $0 })
        try plane.run(until: { outcome != nil }, timeoutNanos: 120_000_000_000)
        let dt = SystemClock.shared.monotonicNanos() - t0
        sink.exited.wait()
        switch outcome {
        case .success(let n)?: precondition(n == total && sink.bytes == total)
        case .failure(let e)?: throw e
        case nil: throw DataPlaneError.cancelled("the benchmark transfer did not finish in 120 s")
        }
        return gbps(total, dt)
    }

    final class BenchSink: DataPlaneReceiver, @unchecked Sendable {
        var buffer: [UInt8]
        var bytes = 0
        var result: Swift.Result<Int, DataPlaneError>?
        let exited = DispatchSemaphore(value: 0)
        init(capacity: Int) { buffer = [UInt8](repeating: 0, count: capacity) }
        func shouldAccept(from sender: String, transfer: UInt64, offer: TransferOffer) -> String? { nil }
        func consume(from sender: String, transfer: UInt64, offset: Int, bytes: UnsafeRawBufferPointer) throws {
            buffer.withUnsafeMutableBytes { d in _ = memcpy(d.baseAddress!, bytes.baseAddress!, min(bytes.count, d.count)) }
            self.bytes += bytes.count
        }
        func finished(from sender: String, transfer: UInt64, result: Swift.Result<Int, DataPlaneError>) { self.result = result }
    }
}
