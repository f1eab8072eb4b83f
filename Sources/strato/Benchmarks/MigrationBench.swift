import Cluster
import DataPlane
import Features
import Foundation
import Protocol
import Scheduling
import Wire

/// `strato bench migration`: one request migrated between two serving engines in real time (time
/// scale 1), its KV blocks held as real bytes at `kv_bytes_scale` 1 and moved over a real data-plane
/// pair (TCP loopback, CRC-32C per chunk, every byte checked against the block's contents on
/// arrival), driven by the migration machines: downtime of live, blocking and recompute per
/// sequence length, and the payload throughput against the data plane's bulk figure measured in
/// the same run. Emulated GPUs: step times from Vidur's profiles (`ServingEngine`).
enum MigrationBench {
    struct Row {
        var tokens: Int
        var method: MigrationMethod
        var downtime: Double       // extra stall: gap between the last token on the source and the first on the destination, minus the normal TBT
        var stages: Int
        var bytes: Int
        var copySeconds: Double
        var outcome: String
        /// Live runs: the bulk transfer measured just before this run, on the same pair.
        var bulkBefore: Double?
        var payloadRate: Double { copySeconds > 0 ? Double(bytes) / copySeconds : 0 }
    }

    /// Writes arriving blocks into the destination's pool, each byte checked.
    final class PoolSink: DataPlaneReceiver {
        let pool: KVBlockPool
        let request: String
        var first: [UInt64: Int] = [:]
        var errors: [String] = []
        init(pool: KVBlockPool, request: String) { self.pool = pool; self.request = request }
        func shouldAccept(from sender: String, transfer: UInt64, offer: TransferOffer) -> String? {
            guard let f = offer.meta["first_block"].flatMap(Int.init) else { return "no first_block in the offer" }
            first[transfer] = f
            return nil
        }
        func consume(from sender: String, transfer: UInt64, offset: Int, bytes: UnsafeRawBufferPointer) throws {
            let base = first[transfer] ?? 0
            var at = 0
            while at < bytes.count {
                let pos = offset + at, n = min(bytes.count - at, pool.blockBytes - pos % pool.blockBytes)
                do { try pool.write(request, block: base + pos / pool.blockBytes, offset: pos % pool.blockBytes, bytes: UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)])) }
                catch { errors.append("\(error)") }
                at += n
            }
        }
        func finished(from sender: String, transfer: UInt64, result: Result<Int, DataPlaneError>) {}
    }

    /// Copies each chunk to its offset in one buffer (touched beforehand).
    final class OffsetSink: DataPlaneReceiver {
        var buffer: [UInt8]
        init(capacity: Int) { buffer = [UInt8](unsafeUninitializedCapacity: capacity) { b, n in _ = memset(b.baseAddress!, 0, capacity); n = capacity } }
        func shouldAccept(from sender: String, transfer: UInt64, offer: TransferOffer) -> String? { Int(offer.totalBytes) <= buffer.count ? nil : "larger than the sink" }
        func consume(from sender: String, transfer: UInt64, offset: Int, bytes: UnsafeRawBufferPointer) throws {
            buffer.withUnsafeMutableBytes { d in _ = memcpy(d.baseAddress! + offset, bytes.baseAddress!, bytes.count) }
        }
        func finished(from sender: String, transfer: UInt64, result: Result<Int, DataPlaneError>) {}
    }

    /// Steps the destination's engine one step at a time (on its own clock, from the resume) until
    /// the moved request emits its next token; that token's time.
    static func firstToken(_ e: inout ServingEngine, after st: ServingEngine.SequenceState) -> Double? {
        for _ in 0..<100_000 {
            guard let next = e.nextStepAt else { return nil }
            e.advance(to: next)
            if let s = e.state(of: st.id), s.generated > st.generated { return s.lastToken }
            if e.state(of: st.id) == nil { return e.takeFinished(by: .infinity).first { $0.id == st.id }?.finished }
        }
        return nil
    }

    /// `repetitions`: live migrations per length (the downtime's median is the figure: at this
    /// size one block more or less in the final stage, or a scheduling hiccup of this box, moves a
    /// single run by milliseconds).
    static func run(model m: InferenceModel, lengths: [Int], methods: [MigrationMethod], downtimeBudget: Double, repetitions: Int = 1,
                    progress: (String) -> Void) throws -> (rows: [Row], bulkSamples: [Double], kvPathGBps: Double, blockBytes: Int) {
        let fullBlock = m.arch.kvBytesPerToken * 16 / Double(m.tensorParallel)
        let receiver = try DataPlane(config: DataPlaneConfig(nodeID: "bench-destination"))
        let sender = try DataPlane(config: DataPlaneConfig(nodeID: "bench-source"))
        defer { sender.close(); receiver.close() }
        let clock = SystemClock.shared
        func pumpBoth() throws {
            _ = try ZMQPoller.readable(sender.sockets + receiver.sockets, timeoutMs: 0)
            try sender.pump(); try receiver.pump()
        }
        // The data plane's own bulk figure, same pair, same chunk size: 256 MiB of distinct bytes
        // (memory touched beforehand, as the KV pools are) into 256 MiB at the receiver, plain
        // copies. Distinct bytes, as a KV cache is: re-sending one cache-resident megabyte
        // measured the CPU cache, not a transfer. Sampled twice before the migrations, once
        // just before each live run and twice after. One transfer of this size swings by half from
        // run to run on a small box (this box runs for seconds at a time at about half its usual
        // rate), so each live run's payload is compared with the bulk transfer just before it, and
        // the caller states the samples' median and best too.
        let bulkBytes = 256 << 20
        let payload = [UInt8](unsafeUninitializedCapacity: bulkBytes) { b, n in _ = memset(b.baseAddress!, 0x5A, bulkBytes); n = bulkBytes }
        let bulkSink = OffsetSink(capacity: bulkBytes)
        func measureBulk(_ when: String?) throws -> Double {
            receiver.receiver = bulkSink
            var bulkDone: Result<Int, DataPlaneError>?
            let b0 = clock.monotonicNanos()
            try sender.send(to: PeerAddress(endpoint: receiver.endpoint), kind: "bulk", totalBytes: bulkBytes, chunkBytes: 1 << 20,
                            source: { off, n, emit in try payload.withUnsafeBytes { try emit(UnsafeRawBufferPointer(rebasing: $0[off..<(off + n)])) } }, done: { bulkDone = $0 })
            while bulkDone == nil { try pumpBoth() }
            let rate = Double(256 << 20) / (Double(clock.monotonicNanos() - b0) / 1e9)
            if let when { progress(String(format: "  data plane bulk (256 MiB, 1 MiB chunks, %@): %.2f GB/s", when as NSString, rate / 1e9)) }
            return rate
        }
        var bulkSamples = [try measureBulk("before"), try measureBulk("before")]
        // The KV path's own rate (pool → data plane → every byte checked → pool), 128 blocks: what
        // a migration plans its first final stage with, before its own stages measure it.
        let probeSrc = KVBlockPool(fullBlockBytes: fullBlock, kvBytesScale: 1), probeDst = KVBlockPool(fullBlockBytes: fullBlock, kvBytesScale: 1)
        probeDst.preallocate(128)   // as a serving engine's cache is, before it serves
        probeSrc.sync(["probe": 128])
        let probeSink = PoolSink(pool: probeDst, request: "probe")
        receiver.receiver = probeSink
        var probeDone: Result<Int, DataPlaneError>?
        let p0 = clock.monotonicNanos()
        try sender.send(to: PeerAddress(endpoint: receiver.endpoint), kind: "kv", meta: ["first_block": "0"], totalBytes: 128 * probeSrc.blockBytes, chunkBytes: 1 << 20,
                        source: { off, n, emit in try probeSrc.read("probe", blocks: 0..<128, offset: off, length: n, into: emit) }, done: { probeDone = $0 })
        while probeDone == nil { try pumpBoth() }
        let kvRate = Double(128 * probeSrc.blockBytes) / (Double(clock.monotonicNanos() - p0) / 1e9)
        guard probeSink.errors.isEmpty, case .success? = probeDone else { throw DataPlaneError.cancelled("the KV probe failed: \(probeSink.errors.prefix(1))") }
        progress(String(format: "  KV path (%d MiB of blocks, every byte checked): %.2f GB/s", 128 * probeSrc.blockBytes >> 20, kvRate / 1e9))
        probeSrc.sync([:]); probeDst.sync([:])

        var rows: [Row] = []
        // Both caches allocated once, for the longest request, before any request runs, as a
        // serving engine's are (allocating and faulting them in for every run made the box's
        // memory busy just before each copy); each run gives its blocks back when it ends.
        let longest = lengths.max() ?? 0
        let srcPool = KVBlockPool(fullBlockBytes: fullBlock, kvBytesScale: 1), dstPool = KVBlockPool(fullBlockBytes: fullBlock, kvBytesScale: 1)
        srcPool.preallocate((longest + 1024) / 16 + 1); dstPool.preallocate((longest + 1024) / 16 + 1)
        // The live runs go round the lengths, repetition by repetition: the box's rate drifts over
        // seconds, and running one length's repetitions back to back gave that length the drift
        // alone. Blocking and recompute once per length after them.
        let liveRuns = methods.contains(.live) ? (0..<max(1, repetitions)).flatMap { _ in lengths.map { ($0, MigrationMethod.live) } } : []
        let runs = liveRuns + lengths.flatMap { t in methods.filter { $0 != .live }.map { (t, $0) } }
        for (tokens, method) in runs {
            var plan = MigrationPlan(method: method, blockBytes: Double(Int(fullBlock) / 8 * 8), bandwidthBytesPerSecond: kvRate)
            plan.downtimeBudget = downtimeBudget
            let request = "req-\(tokens)-\(method.rawValue)"
            var src = ServingEngine(model: m, config: ServingEngine.Config(maxRunning: 8))
            var dst = ServingEngine(model: m, config: ServingEngine.Config(maxRunning: 8))
            let bulkBefore = method == .live ? try measureBulk(nil) : nil
            if let b = bulkBefore { bulkSamples.append(b) }
            let sink = PoolSink(pool: dstPool, request: request)
            receiver.receiver = sink
            let t0 = clock.monotonicNanos()
            func now() -> Double { Double(clock.monotonicNanos() - t0) / 1e9 }
            // Long enough an output that the request is still decoding when a slow copy ends.
            _ = src.add(id: request, prompt: tokens, decode: 4096, at: 0)
            // Decode a while on the source: the normal time between tokens.
            func step(_ e: inout ServingEngine, _ pool: KVBlockPool) {
                // Only when a step is due: syncing the pool with the engine's block counts on
                // every pass of the pump loop took CPU from the copy it measures.
                guard let due = e.nextStepAt, due <= now() else { return }
                e.advance(to: now())
                pool.sync(e.blockCounts)
            }
            while (src.state(of: request)?.generated ?? 0) < 30 { step(&src, srcPool); try pumpBoth() }
            // The normal time between tokens, as the engine measured it so far.
            let before = src.state(of: request)!
            let tbt = before.gapSum / Double(max(1, before.generated - 1))
            let total = (tokens + 4096 + 15) / 16
            var (machine, pending) = MigrationSource.start(request: request, plan: plan, totalBlocks: total, at: now())
            var dest: MigrationDestination?
            var kept: ServingEngine.SequenceState?
            var inFlight = false
            var finished = false
            var bytes = 0
            var copySeconds = 0.0
            var lastOnSource: Double?, firstOnDestination: Double?
            var recomputedTokens = 0, finalBlocks = 0
            let deadline = now() + 60
            /// Blocks arrived whole at the destination: the next stage, or the commit and resume.
            func delivered(_ range: Range<Int>, final: Bool) {
                _ = dest?.receive(range)
                guard final else { pending += machine.stageCopied(computed: src.completeBlocks(of: request) ?? 0, at: now()); return }
                pending += machine.finalDelivered(at: now())
                if dest?.commit().isEmpty == false, let st = kept {
                    dst.resume(st, reserved: dest!.reservedBlocks, kvBlocks: dest!.received, at: now())
                    recomputedTokens = st.computed - min(st.computed, dest!.received * 16)
                    firstOnDestination = firstToken(&dst, after: st)
                }
                pending += machine.committed(at: now())
            }
            while !finished && now() < deadline {
                while !pending.isEmpty {
                    let d = pending.removeFirst()
                    switch d {
                    case .reserve(let n):
                        switch MigrationDestination.reserve(request: request, blocks: n, free: dst.freeBlocks) {
                        case .success(let r): _ = dst.reserve(n); dest = r; pending += machine.reserved(true, computed: src.completeBlocks(of: request) ?? 0, at: now())
                        case .failure(let a): pending += machine.reserved(false, reason: "\(a)", computed: 0, at: now())
                        }
                    case .copy(_, let range), .copyFinal(let range):
                        let isFinal: Bool = { if case .copyFinal = d { return true }; return false }()
                        if isFinal { finalBlocks = range.count }
                        inFlight = true
                        let c0 = now()
                        // No blocks (recompute, or a request at a block boundary): the transfer carries
                        // the request's state alone, as the agents' handler sends it.
                        let state = range.isEmpty ? ["state": String(repeating: "s", count: 256)] : [:]
                        try sender.send(to: PeerAddress(endpoint: receiver.endpoint), kind: "kv", meta: ["first_block": "\(range.lowerBound)"].merging(state) { a, _ in a },
                                        totalBytes: range.count * srcPool.blockBytes, chunkBytes: 1 << 20,
                                        source: { off, n, emit in try srcPool.read(request, blocks: range, offset: off, length: n, into: emit) },
                                        done: { result in
                                            inFlight = false
                                            copySeconds += now() - c0
                                            guard case .success(let n) = result, sink.errors.isEmpty else {
                                                pending += machine.destinationFailed("\(result) \(sink.errors.prefix(1))"); return
                                            }
                                            bytes += n
                                            delivered(range, final: isFinal)
                                        })
                    case .suspend:
                        // After the step in flight: wait for it to end, then take the request out.
                        while now() < src.time { try pumpBoth() }
                        lastOnSource = src.state(of: request)?.lastToken
                        kept = src.suspend(request)   // its bytes stay in the pool until `free` (the source is not stepped again)
                        pending += machine.suspended(computed: ((kept?.computed ?? 0) + 15) / 16, at: now())
                    case .free:
                        srcPool.drop(request)
                    case .resumeHere, .abortDestination, .report:
                        break
                    case .stageOut, .handOver, .dropStaged:
                        break   // the bench's plan never stages (its destination always has room)
                    }
                }
                if case .aborted = machine.phase { finished = true }
                if machine.phase == .done {
                    finished = true
                } else if lastOnSource == nil {
                    step(&src, srcPool)   // it keeps decoding on the source during the stages
                }
                try pumpBoth()
            }
            let downtime = (firstOnDestination.flatMap { f in lastOnSource.map { f - $0 } } ?? .nan) - tbt
            let outcome: String = { if case .aborted(let a) = machine.phase { return "aborted: \(a)" }; return firstOnDestination == nil ? "no token on the destination in 60 s" : "done" }()
            let row = Row(tokens: tokens, method: method, downtime: downtime, stages: machine.stages, bytes: bytes, copySeconds: copySeconds, outcome: outcome, bulkBefore: bulkBefore)
            rows.append(row)
            let paired = bulkBefore.map { String(format: ", %.2f GB/s vs bulk just before %.2f GB/s", row.payloadRate / 1e9, $0 / 1e9) } ?? ""
            progress(String(format: "  %5d tokens, %-9@ downtime %7.1f ms, %d stages, final %d blocks, %d tokens recomputed, %6.1f MiB in %.3f s%@ (%@)", tokens, method.rawValue as NSString,
                            downtime * 1000, machine.stages, finalBlocks, recomputedTokens, Double(bytes) / 1_048_576, copySeconds, paired as NSString, outcome as NSString))
            srcPool.sync([:]); dstPool.sync([:])
        }
        bulkSamples += [try measureBulk("after"), try measureBulk("after")]
        return (rows, bulkSamples, kvRate, Int(fullBlock))
    }
}
