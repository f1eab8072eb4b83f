import CZeroMQ
import Cluster
import Foundation
import Protocol
import Scheduling
import Wire

/// `strato bench wire`: raw libzmq ROUTER/DEALER against the same traffic through Stratolab's
/// socket wrapper and envelope codec, measured in one run so the ratio compares like with like.
public enum WireBench {
    public struct Figures {
        public var messagesPerSecond: Double
        public var p50Micros: Double
        public var p99Micros: Double
    }

    public struct Result {
        public var raw: Figures
        /// The wrapper moving pre-encoded bytes, no codec: what the socket layer alone costs.
        public var wrapperOnly: Figures
        public var wrapped: Figures
        public var payloadBytes: Int
        public var encodeNanos: Double
        public var decodeNanos: Double
        /// Each round's throughput ratio (raw and wrapped measured back to back in that round).
        public var roundRatios: [Double] = []

        /// The medians' ratio: msgs/s are the median over the rounds of each path.
        public var throughputRatio: Double { wrapped.messagesPerSecond / raw.messagesPerSecond }
        var roundsLine: String {
            guard roundRatios.count > 1 else { return "msgs/s from one round of each path" }
            let sorted = roundRatios.sorted()
            return "msgs/s: medians of \(roundRatios.count) interleaved rounds (raw, bytes only, envelope); the rounds' own ratios "
                + String(format: "%.2f … %.2f", sorted.first!, sorted.last!) + ", \(roundRatios.filter { $0 >= 0.5 }.count) of \(roundRatios.count) at ≥ 0.50"
        }

        public var table: String {
            func row(_ name: String, _ f: Figures) -> String {
                name.padding(toLength: 28, withPad: " ", startingAt: 0)
                    + String(format: " %14.0f %12.1f %12.1f", f.messagesPerSecond, f.p50Micros, f.p99Micros)
            }
            let head = "path".padding(toLength: 28, withPad: " ", startingAt: 0)
                + "msgs/s".leftPadded(15) + "RTT p50 µs".leftPadded(13) + "RTT p99 µs".leftPadded(13)
            return """

            wire benchmark (tcp loopback, ROUTER/DEALER, \(payloadBytes)-byte heartbeat envelope with \(WireBench.telemetryGPUs) GPUs of telemetry)
            \(head)
            \(row("raw libzmq (C API)", raw))
            \(row("wrapper, bytes only", wrapperOnly))
            \(row("Stratolab wrapper+envelope", wrapped))
            envelope codec alone: encode \(String(format: "%.0f", encodeNanos)) ns, decode \(String(format: "%.0f", decodeNanos)) ns per message
            \(roundsLine)
            ratio (Stratolab / raw): throughput \(String(format: "%.2f", throughputRatio)), RTT p50 \(String(format: "%.2f", raw.p50Micros / wrapped.p50Micros)) (target ≥ 0.50: \(throughputRatio >= 0.5 ? "met" : "NOT met"))
            """
        }
    }

    nonisolated(unsafe) static var telemetryGPUs = 4

    static func sampleEnvelope() -> Envelope {
        var hb = Heartbeat()
        hb.nodeID = "gpu-a100-0"
        hb.incarnation = 3
        hb.sequence = 12345
        var t = Telemetry()
        t.processCpuSeconds = 1.25
        t.processRssBytes = 48 << 20
        t.gpus = (0..<telemetryGPUs).map { i in var g = GpuTelemetry(); g.index = UInt32(i); g.utilization = 0.5; return g }
        hb.telemetry = t
        return Envelope.make(sender: "gpu-a100-0", messageID: 1, sentAtNanos: SystemClock.shared.wallNanos(), body: .heartbeat(hb))
    }

    /// `rounds` interleaved rounds of the three paths' throughput (round trips in the first only):
    /// on a small, busy box one round's ratio swings with what else the cores run, so each path
    /// reports its median over the rounds.
    public static func run(messages: Int, roundTrips: Int, rounds: Int = 1, telemetryGPUs: Int = 4, progress: (String) -> Void) throws -> Result {
        WireBench.telemetryGPUs = telemetryGPUs
        let codec = EnvelopeCodec()
        let payload = codec.encode(sampleEnvelope())
        let (enc, dec) = codecCost(iterations: 50_000)
        var raws: [Figures] = [], onlys: [Figures] = [], wrappeds: [Figures] = []
        for k in 0..<max(1, rounds) {
            let trips = k == 0 ? roundTrips : 0
            let of = rounds > 1 ? " (round \(k + 1) of \(rounds))" : ""
            progress("raw libzmq: \(messages) messages, \(trips) round trips\(of) …")
            raws.append(try rawRun(payload: payload, messages: messages, roundTrips: trips))
            progress("Stratolab wrapper, pre-encoded bytes: same traffic\(of) …")
            onlys.append(try wrappedRun(messages: messages, roundTrips: trips, codec: false))
            progress("Stratolab wrapper + envelope: same traffic\(of) …")
            wrappeds.append(try wrappedRun(messages: messages, roundTrips: trips, codec: true))
        }
        // Throughput: each path's median round; latency: the first round's.
        func median(_ fs: [Figures]) -> Figures {
            var f = fs[0]
            f.messagesPerSecond = percentile(fs.map(\.messagesPerSecond).sorted(), 50)
            return f
        }
        var r = Result(raw: median(raws), wrapperOnly: median(onlys), wrapped: median(wrappeds), payloadBytes: payload.count, encodeNanos: enc, decodeNanos: dec)
        r.roundRatios = zip(wrappeds, raws).map { $0.messagesPerSecond / $1.messagesPerSecond }
        return r
    }

    /// Nanoseconds per encode and per decode of the sample envelope, without sockets: the best of
    /// five rounds, as the other threads of a 2-core box otherwise decide the figure.
    static func codecCost(iterations: Int) -> (Double, Double) {
        let codec = EnvelopeCodec()
        let sample = sampleEnvelope()
        var header = EnvelopeHeader(sample)
        let body = HotBody.heartbeat(sample.heartbeat)
        var bytes: [UInt8] = []
        var best = (Double.infinity, Double.infinity)
        var sum: UInt64 = 0
        for _ in 0..<5 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            // As agents and the coordinator send: encoded and lent to the socket.
            for i in 0..<iterations { header.messageID = UInt64(i); codec.withEncoded(header, body) { sum &+= UInt64($0.count) } }
            bytes = codec.encode(header, body)
            let t1 = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<iterations {
                if case .heartbeat(let f)? = bytes.withUnsafeBytes({ try? codec.decodeFrame($0) }) { sum &+= f.header.messageID }
            }
            let t2 = DispatchTime.now().uptimeNanoseconds
            best.0 = min(best.0, Double(t1 - t0) / Double(iterations))
            best.1 = min(best.1, Double(t2 - t1) / Double(iterations))
        }
        return (best.0, best.1 + Double(sum & 0))
    }

    // MARK: Raw libzmq

    static func rawRun(payload: [UInt8], messages: Int, roundTrips: Int) throws -> Figures {
        let ctx = zmq_ctx_new()!
        defer { zmq_ctx_term(ctx) }
        let router = zmq_socket(ctx, ZMQ_ROUTER)!
        let dealer = zmq_socket(ctx, ZMQ_DEALER)!
        var hwm: Int32 = 0
        for s in [router, dealer] {
            zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, 4); zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, 4)
            var linger: Int32 = 0; zmq_setsockopt(s, ZMQ_LINGER, &linger, 4)
        }
        defer { zmq_close(dealer); zmq_close(router) }
        zmq_bind(router, "tcp://127.0.0.1:*")
        var buf = [CChar](repeating: 0, count: 256); var len = 256
        zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, &buf, &len)
        zmq_connect(dealer, String(cString: buf))

        // Throughput: the router drains on its own thread while the dealer sends.
        let routerBox = UnsafeSendable(router)
        let done = DispatchSemaphore(value: 0)
        let t0 = DispatchTime.now().uptimeNanoseconds
        Thread.detachNewThread {
            var msg = zmq_msg_t()
            zmq_msg_init(&msg)
            var received = 0
            while received < messages {
                zmq_msg_recv(&msg, routerBox.value, 0)              // identity
                zmq_msg_recv(&msg, routerBox.value, 0)              // payload
                received += 1
            }
            zmq_msg_close(&msg)
            done.signal()
        }
        payload.withUnsafeBytes { p in
            for _ in 0..<messages { zmq_send(dealer, p.baseAddress, p.count, 0) }
        }
        done.wait()
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9

        // Round trips: router echoes each message back.
        var lat: [Int64] = []
        lat.reserveCapacity(roundTrips)
        var identity = [UInt8](repeating: 0, count: 256)
        var data = [UInt8](repeating: 0, count: 65536)
        for _ in 0..<roundTrips {
            let s = DispatchTime.now().uptimeNanoseconds
            payload.withUnsafeBytes { _ = zmq_send(dealer, $0.baseAddress, $0.count, 0) }
            let idLen = zmq_recv(router, &identity, identity.count, 0)
            let n = zmq_recv(router, &data, data.count, 0)
            zmq_send(router, identity, Int(idLen), ZMQ_SNDMORE)
            zmq_send(router, data, Int(n), 0)
            _ = zmq_recv(dealer, &data, data.count, 0)
            lat.append(Int64(DispatchTime.now().uptimeNanoseconds - s))
        }
        lat.sort()
        return Figures(messagesPerSecond: Double(messages) / elapsed,
                       p50Micros: percentile(lat.map(Double.init), 50) / 1000,
                       p99Micros: percentile(lat.map(Double.init), 99) / 1000)
    }

    // MARK: Stratolab path

    static func wrappedRun(messages: Int, roundTrips: Int, codec useCodec: Bool) throws -> Figures {
        let codec = EnvelopeCodec()
        let preEncoded = codec.encode(sampleEnvelope())
        let ctx = ZMQContext()
        let router = try ZMQSocket(ctx, .router)
        let dealer = try ZMQSocket(ctx, .dealer)
        try router.setHighWaterMarks(send: 0, receive: 0)
        try dealer.setHighWaterMarks(send: 0, receive: 0)
        try router.bind("tcp://127.0.0.1:*")
        try dealer.connect(try router.lastEndpoint())
        defer { dealer.close(); router.close(); ctx.terminate() }

        let routerBox = UnsafeSendable(router)
        let done = DispatchSemaphore(value: 0)
        // As the agent and the coordinator do: the heartbeat as header and body, decoded in place
        // from the frame the socket lends.
        let sample = sampleEnvelope()
        var header = EnvelopeHeader(sample)
        let body = HotBody.heartbeat(sample.heartbeat)
        let t0 = DispatchTime.now().uptimeNanoseconds
        Thread.detachNewThread {
            var received = 0
            while received < messages {
                let ok = try? routerBox.value.receive { frames -> Bool in
                    guard frames.count == 2 else { return false }
                    guard useCodec else { return true }
                    guard case .heartbeat? = try? codec.decodeFrame(frames[1]) else { return false }
                    return true
                }
                if ok == true { received += 1 }
            }
            done.signal()
        }
        for i in 0..<messages {
            if useCodec {
                header.messageID = UInt64(i)
                header.sentAtUnixNanos = SystemClock.shared.wallNanos()
                try codec.withEncoded(header, body) { _ = try dealer.send(buffers: [$0]) }
            } else {
                try dealer.send([preEncoded])
            }
        }
        done.wait()
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9

        var lat: [Int64] = []
        lat.reserveCapacity(roundTrips)
        for i in 0..<roundTrips where !useCodec {
            let s = DispatchTime.now().uptimeNanoseconds
            try dealer.send([preEncoded])
            guard let frames = try router.receive(), frames.count == 2 else { continue }
            try router.send(frames)
            guard try dealer.receive() != nil else { continue }
            lat.append(Int64(DispatchTime.now().uptimeNanoseconds - s))
            _ = i
        }
        for i in 0..<roundTrips where useCodec {
            let s = DispatchTime.now().uptimeNanoseconds
            header.messageID = UInt64(i)
            header.sentAtUnixNanos = SystemClock.shared.wallNanos()
            try dealer.send([codec.encode(header, body)])
            let answered = try router.receive { frames -> Bool in
                guard frames.count == 2, case .heartbeat(let f)? = try? codec.decodeFrame(frames[1]) else { return false }
                let h = f.header, hb = f.withoutTelemetry
                var ack = HeartbeatAck()
                ack.nodeID = hb.nodeID
                ack.sequence = hb.sequence
                ack.receivedAtUnixNanos = SystemClock.shared.wallNanos()
                ack.sentAtUnixNanos = ack.receivedAtUnixNanos
                let reply = codec.encode(EnvelopeHeader(messageID: h.messageID, sender: "coordinator", sentAtUnixNanos: ack.sentAtUnixNanos,
                                                        recipient: h.sender, inReplyTo: h.messageID), .heartbeatAck(ack))
                return (try? reply.withUnsafeBytes { try router.send(buffers: [frames[0], $0]) }) == true
            }
            guard answered == true else { continue }
            guard try dealer.receive({ frames in try codec.decodeFrame(frames[0]) }) != nil else { continue }
            lat.append(Int64(DispatchTime.now().uptimeNanoseconds - s))
        }
        lat.sort()
        return Figures(messagesPerSecond: Double(messages) / elapsed,
                       p50Micros: percentile(lat.map(Double.init), 50) / 1000,
                       p99Micros: percentile(lat.map(Double.init), 99) / 1000)
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}

/// Hands a non-Sendable value to exactly one other thread (the benchmark's receiver), which then
/// owns it until the sender waits on the semaphore.
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}
