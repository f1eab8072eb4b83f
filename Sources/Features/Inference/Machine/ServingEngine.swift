import Scheduling

/// An iteration-level serving engine in vLLM's shape, pure over the caller's clock (trace seconds):
/// the GPU agent drives it on its wall clock × time scale, the twin on virtual time.
///
/// - **Continuous batching**: each step (one model iteration) runs every running sequence's next
///   decode token plus prefill chunks of waiting ones, up to `maxRunning` sequences and
///   `maxBatchedTokens` tokens a step (chunked prefill: a long prompt is spread over several steps
///   instead of stalling the batch). Decodes go first, then swapped sequences come back, then
///   waiting ones are admitted first come, first served.
/// - **Paged KV cache**: a block manager hands out `blockTokens`-token blocks from the memory left
///   after the weights; a sequence holds ⌈tokens / blockTokens⌉ blocks. Bytes per token =
///   2 × layers × kv_heads × head_dim × 2 (fp16), from the model's dimensions.
/// - **Out of blocks**: the newest running sequence is preempted, as vLLM does: by recompute (its
///   blocks are freed; it waits again at the front and re-prefills its prompt and what it had
///   generated) or by swap (its blocks move to host memory and come back when there is room).
/// - **Iteration time** from Vidur's operator profiles (`InferenceModel`): the non-attention time
///   of the step's tokens plus reading the KV cache its sequences attend to.
///
/// A step is committed when it starts: `advance(to:)` runs every step that starts by then, so a
/// request added at `t` joins the first step starting after `t`, and the results of a step that is
/// still running are known ahead and carry their exact time.
public struct ServingEngine: Sendable {
    public enum Preemption: String, Sendable { case recompute, swap }

    public struct Config: Sendable {
        public var blockTokens = 16
        /// KV blocks on the GPU; nil: from the memory left after the weights (90 % usable).
        public var gpuBlocks: Int?
        /// Host-memory blocks for swapped sequences.
        public var swapBlocks = 0
        public var maxRunning: Int
        public var maxBatchedTokens = 2048
        public var preemption = Preemption.recompute
        public init(maxRunning: Int) { self.maxRunning = max(1, maxRunning) }
    }

    /// What a finished request measured.
    public struct Finished: Sendable, Equatable {
        public var id: String
        /// When it reached the engine, was first scheduled, had its first output token, its last.
        public var arrived: Double
        public var admitted: Double
        public var firstToken: Double
        public var finished: Double
        /// Mean and largest gap between consecutive output tokens (0 for a single token).
        public var meanTBT: Double
        public var maxTBT: Double
        public var preemptions: Int
        public var ttft: Double { firstToken - arrived }
        public var latency: Double { finished - arrived }
    }

    struct Sequence: Sendable {
        var id: String
        var prompt: Int
        var decode: Int
        var arrived: Double
        /// When it may be scheduled (its cached KV loaded); `arrived` unless it waited for a load.
        var ready: Double
        var admitted: Double?
        /// Tokens whose KV is computed (prompt and generated), and tokens generated so far.
        var computed = 0
        var generated = 0
        var blocks = 0
        var firstToken: Double?
        var lastToken: Double?
        var gapSum = 0.0
        var maxGap = 0.0
        var preemptions = 0
        /// Moved here by a migration and no token out here yet.
        var resumed = false
        /// Swapped out to a memory host (its blocks left the GPU); when room came back its blocks
        /// were reserved and its KV asked for (`fetchRequested`); it runs from `fetchedAt`.
        var remote = false
        var fetchRequested = false
        var fetchedAt: Double?
        /// Tokens whose KV must exist before the next token: the prompt, and every generated token
        /// but the newest (its KV is computed by the step that emits the next one). After a
        /// recompute preemption they are prefilled again.
        var target: Int { prompt + max(0, generated - 1) }
        var prefilling: Bool { computed < target }
    }

    public let model: InferenceModel
    public let config: Config
    public let gpuBlocks: Int
    public private(set) var freeBlocks: Int
    public private(set) var freeSwapBlocks: Int
    /// When the last committed step ends (the engine is busy until then).
    public private(set) var time: Double = -Double.infinity
    private var waiting: [Sequence] = []
    private var running: [Sequence] = []
    private var swapped: [Sequence] = []
    private var done: [Finished] = []
    public private(set) var steps = 0
    public private(set) var preemptions = 0
    /// Preemptions that swapped the request's KV out to a memory host.
    public private(set) var remoteSwaps = 0
    private var resumeGaps: [String: Double] = [:]

    public init(model: InferenceModel, config: Config) {
        self.model = model
        self.config = config
        let blockBytes = model.arch.kvBytesPerToken * Double(config.blockTokens) / Double(model.tensorParallel)
        let free = model.usableGPUBytes - model.gpuWeightBytes
        self.gpuBlocks = max(1, config.gpuBlocks ?? Int(max(0, free) / blockBytes))
        self.freeBlocks = gpuBlocks
        self.freeSwapBlocks = config.swapBlocks
        self.weightStreamSeconds = model.weightStreamSeconds
    }

    // MARK: swapping to a memory host

    /// A request's KV leaving for a memory host (preempted), or asked back (room came back).
    public struct SwapEvent: Sendable, Equatable {
        public var id: String
        public var blocks: Int
        /// Tokens of computed KV in those blocks.
        public var tokens: Int
        /// The step it happened in (trace seconds).
        public var at: Double
    }
    /// Whether a preempted request with (blocks, computed tokens) swaps to a memory host instead of
    /// being recomputed (nil: never; the agent sets it from the offload policy).
    public var remoteSwap: (@Sendable (Int, Int) -> Bool)?
    private var swapOuts: [SwapEvent] = []
    private var swapIns: [SwapEvent] = []
    /// Nothing can run until KV swapped to a memory host comes back.
    public private(set) var waitingForSwapIn = false

    /// Preempted requests whose KV is to be sent to a memory host; taken once.
    public mutating func takeSwapOuts() -> [SwapEvent] { defer { swapOuts.removeAll() }; return swapOuts }
    /// Swapped requests whose KV is to be fetched back (their blocks are reserved); taken once.
    public mutating func takeSwapIns() -> [SwapEvent] { defer { swapIns.removeAll() }; return swapIns }

    /// The KV of a request swapped to a memory host is back: it runs from `readyAt`.
    public mutating func swapInDone(_ id: String, readyAt: Double) {
        guard let i = swapped.firstIndex(where: { $0.id == id && $0.remote && $0.fetchRequested }) else { return }
        swapped[i].fetchedAt = readyAt
        waitingForSwapIn = false
    }

    /// The KV of a request swapped to a memory host is lost (the host died, or it came back
    /// wrong): the request is recomputed, first in the waiting queue.
    public mutating func swapInFailed(_ id: String) {
        guard let i = swapped.firstIndex(where: { $0.id == id && $0.remote }) else { return }
        var s = swapped.remove(at: i)
        releaseSwapped(s)
        s.remote = false; s.fetchRequested = false; s.fetchedAt = nil
        s.blocks = 0; s.computed = 0
        waiting.insert(s, at: 0)
        waitingForSwapIn = false
    }

    private mutating func releaseSwapped(_ s: Sequence) {
        if s.remote { if s.fetchRequested { freeBlocks += s.blocks } } else { freeSwapBlocks += s.blocks }
    }

    // MARK: streamed weights

    /// Seconds to stream the offloaded layers once (0: all weights on the GPU): a step takes at
    /// least this long. Changes when the weights move to another tier or host.
    public var weightStreamSeconds: Double
    /// While true no step starts (the offloaded weights are not where they can be streamed from:
    /// being placed, or their host died); requests wait, none is lost.
    public private(set) var stalled = false
    public private(set) var stalledSeconds = 0.0
    private var stalledSince: Double?

    /// Stops starting steps from `t` (the step in flight ends).
    public mutating func stall(at t: Double) {
        guard !stalled else { return }
        advance(to: t)
        stalled = true
        stalledSince = max(t, time)
    }

    /// Steps start again at `t` with weights streamed in `streamSeconds` a step.
    public mutating func unstall(at t: Double, streamSeconds: Double) {
        weightStreamSeconds = max(0, streamSeconds)
        guard stalled else { return }
        stalled = false
        if let since = stalledSince { stalledSeconds += max(0, t - since) }
        stalledSince = nil
        time = max(time, t)
    }

    // MARK: requests

    /// A request reaches the engine at `t` (steps starting before then run first; it joins one
    /// that starts at `t`). A request whose
    /// prompt and output can never fit the KV cache is refused, naming why.
    ///
    /// `cached` prompt tokens have their KV already (loaded from a memory tier): only the rest is
    /// prefilled (at least one token is, to emit the first output). `arrivedAt` is when the request
    /// reached the replica if that was before `t` (it waited for its cached KV to load): its time
    /// to first token counts from then.
    public mutating func add(id: String, prompt: Int, decode: Int, at t: Double, cached: Int = 0, arrivedAt: Double? = nil) -> String? {
        let need = blocks(for: prompt + decode)
        guard need <= gpuBlocks else {
            return "request \(id) needs \(need) KV blocks (\(prompt + decode) tokens) but the replica has \(gpuBlocks)"
        }
        advance(to: t, before: true)
        waitingForSwapIn = false
        var s = Sequence(id: id, prompt: max(1, prompt), decode: max(1, decode), arrived: min(t, arrivedAt ?? t), ready: t)
        s.computed = max(0, min(cached, s.prompt - 1))
        waiting.append(s)
        return nil
    }

    /// Drops a request wherever it is (its blocks are freed). True when it was here.
    @discardableResult
    public mutating func remove(_ id: String) -> Bool {
        if let i = running.firstIndex(where: { $0.id == id }) { freeBlocks += running.remove(at: i).blocks; return true }
        if let i = swapped.firstIndex(where: { $0.id == id }) { releaseSwapped(swapped.remove(at: i)); return true }
        if let i = waiting.firstIndex(where: { $0.id == id }) { waiting.remove(at: i); return true }
        return false
    }

    /// Requests that finished by `t` (their last token out), in finishing order; taken once.
    public mutating func takeFinished(by t: Double) -> [Finished] {
        advance(to: t)
        let out = done.filter { $0.finished <= t }
        done.removeAll { $0.finished <= t }
        return out
    }

    /// Requests whose prompt's KV was complete by `t` (their first output token was out), in
    /// order; taken once. What a prefix cache stores.
    public mutating func takePrefilled(by t: Double) -> [String] {
        advance(to: t)
        let out = prefilled.filter { $0.at <= t }.map(\.id)
        prefilled.removeAll { $0.at <= t }
        return out
    }
    private var prefilled: [(id: String, at: Double)] = []
    /// Whether `takePrefilled` is used (off: nothing is kept for it).
    public var tracksPrefill = false

    public var isIdle: Bool { waiting.isEmpty && running.isEmpty && swapped.isEmpty }
    /// Requests in the engine (waiting, running, swapped), and those finished but not yet taken.
    public var load: Int { waiting.count + running.count + swapped.count }
    /// Requests waiting for the GPU (not admitted, or swapped out): a backlog of prefill work.
    public var backlog: Int { waiting.count + swapped.count }
    public var usedBlocks: Int { gpuBlocks - freeBlocks }
    /// When the next step starts, or nil when there is nothing to run.
    public var nextStepAt: Double? { isIdle || stalled || waitingForSwapIn ? nil : max(time, waiting.first?.ready ?? time) }
    /// KV blocks each request holds (running and swapped), for the replica's block pool.
    public var blockCounts: [String: Int] {
        var out: [String: Int] = [:]
        for s in running where s.blocks > 0 { out[s.id] = s.blocks }
        for s in swapped where s.blocks > 0 && (!s.remote || s.fetchedAt != nil) { out[s.id] = s.blocks }
        return out
    }
    /// When the earliest result not yet taken is due.
    public var nextFinishAt: Double? { done.map(\.finished).min() }

    // MARK: moving a request (migration)

    /// A request's state as it moves between engines: its tokens, and how much KV it has.
    public struct SequenceState: Sendable, Equatable {
        public var id: String
        public var prompt: Int
        public var decode: Int
        public var generated: Int
        /// Tokens whose KV is computed (what a migration copies).
        public var computed: Int
        public var arrived: Double
        public var admitted: Double?
        public var firstToken: Double?
        public var lastToken: Double?
        public var gapSum: Double
        public var maxGap: Double
        public var preemptions: Int
    }

    /// A running request's state (nil when it is not running here).
    public func state(of id: String) -> SequenceState? {
        running.first { $0.id == id }.map(Self.export)
    }

    /// A request's state wherever it is in the engine, without taking it out.
    public func peek(_ id: String) -> SequenceState? {
        (running.first { $0.id == id } ?? waiting.first { $0.id == id } ?? swapped.first { $0.id == id }).map(Self.export)
    }

    /// Blocks holding computed KV of a running request (what a copy stage can send).
    public func computedBlocks(of id: String) -> Int? {
        running.first { $0.id == id }.map { blocks(for: $0.computed) }
    }

    /// Blocks of a running request that are full (16 tokens of computed KV): what a copy stage
    /// sends while the request decodes; the partly filled last block goes with the final stage.
    public func completeBlocks(of id: String) -> Int? {
        running.first { $0.id == id }.map { $0.computed / config.blockTokens }
    }

    /// Takes a running request out (it stops after the step in flight; its blocks are freed).
    public mutating func suspend(_ id: String) -> SequenceState? {
        guard let i = running.firstIndex(where: { $0.id == id }) else { return nil }
        let s = running.remove(at: i)
        freeBlocks += s.blocks
        return Self.export(s)
    }

    public enum Place: String, Sendable { case waiting, running, swapped }

    /// Where a request is in the engine (nil: not here, or finished).
    public func place(of id: String) -> Place? {
        if running.contains(where: { $0.id == id }) { return .running }
        if waiting.contains(where: { $0.id == id }) { return .waiting }
        if swapped.contains(where: { $0.id == id }) { return .swapped }
        return nil
    }

    /// Takes a request out wherever it is: a running one after the step in flight (`suspend`); a
    /// waiting or swapped one with no KV to move (its state says `computed` 0: the destination
    /// prefills it again). Its blocks are freed.
    public mutating func takeOut(_ id: String) -> SequenceState? {
        if let st = suspend(id) { return st }
        if let i = swapped.firstIndex(where: { $0.id == id }) {
            var s = swapped.remove(at: i)
            releaseSwapped(s)
            s.blocks = 0; s.computed = 0
            return Self.export(s)
        }
        if let i = waiting.firstIndex(where: { $0.id == id }) { return Self.export(waiting.remove(at: i)) }
        return nil
    }

    /// The gap between the last token a request had before it moved and its first one here, once
    /// that token is out (taken once): the downtime a migration added, plus one normal step.
    public mutating func takeResumeGap(_ id: String) -> Double? { resumeGaps.removeValue(forKey: id) }

    /// What the migration policies see of this engine: blocks in use, the head of the waiting
    /// queue's demand, and each running request's blocks and remaining output.
    public struct Load: Sendable, Equatable {
        public struct Request: Sendable, Equatable { public var id: String; public var blocks: Int; public var remaining: Int; public var generated: Int }
        public var totalBlocks: Int
        public var usedBlocks: Int
        public var headOfQueueDemand: Int
        /// Blocks every waiting request needs (swapped ones included) before it can run: the
        /// demand Llumnix's dispatching counts, where migration counts only the head's.
        public var waitingDemand = 0
        public var waiting: Int
        /// Oldest first: the last is the one the engine preempts first when blocks run out.
        public var running: [Request]
        public init(totalBlocks: Int, usedBlocks: Int, headOfQueueDemand: Int, waiting: Int, running: [Request], waitingDemand: Int = 0) {
            self.totalBlocks = totalBlocks; self.usedBlocks = usedBlocks; self.headOfQueueDemand = headOfQueueDemand
            self.waiting = waiting; self.running = running; self.waitingDemand = waitingDemand
        }
    }

    public var loadSnapshot: Load {
        Load(totalBlocks: gpuBlocks, usedBlocks: usedBlocks, headOfQueueDemand: waiting.first.map { blocks(for: $0.target) } ?? 0,
             waiting: waiting.count + swapped.count,
             running: running.sorted(by: Self.older).map { Load.Request(id: $0.id, blocks: $0.blocks, remaining: max(0, $0.decode - $0.generated), generated: $0.generated) },
             waitingDemand: (waiting + swapped).reduce(0) { $0 + blocks(for: $1.target) })
    }

    /// Sets aside `count` blocks for a request about to arrive (a migration's destination); false
    /// when there is no room.
    public mutating func reserve(_ count: Int) -> Bool {
        guard count <= freeBlocks else { return false }
        freeBlocks -= count
        return true
    }

    public mutating func release(_ count: Int) { freeBlocks = min(gpuBlocks, freeBlocks + count) }

    /// Resumes a request moved here at `t`, with `reserved` blocks set aside for it before and
    /// the KV of its first `kvBlocks` blocks present (what arrived, or what the source kept);
    /// the rest of its KV is prefilled again (recompute).
    public mutating func resume(_ st: SequenceState, reserved: Int, kvBlocks: Int, at t: Double) {
        advance(to: t, before: true)
        var s = Sequence(id: st.id, prompt: st.prompt, decode: st.decode, arrived: st.arrived, ready: st.arrived)
        s.admitted = st.admitted; s.generated = st.generated; s.computed = min(st.computed, kvBlocks * config.blockTokens)
        s.firstToken = st.firstToken; s.lastToken = st.lastToken; s.gapSum = st.gapSum; s.maxGap = st.maxGap; s.preemptions = st.preemptions
        s.resumed = st.lastToken != nil
        s.blocks = reserved
        // Blocks for what must be prefilled again beyond the reservation come from the free pool;
        // without room it waits to be recomputed from scratch, like a preempted request.
        let short = blocks(for: s.target) - s.blocks
        if short > 0 && short > freeBlocks {
            freeBlocks += s.blocks
            s.blocks = 0; s.computed = 0
            waiting.insert(s, at: 0)
            return
        }
        if short > 0 { freeBlocks -= short; s.blocks += short }
        running.append(s)
        if time < t { time = t }
    }

    /// Takes in at `t` a request moved here whose KV waits on a memory host (a migration staged it
    /// there because this engine had no room): it joins the swapped queue as if it had been
    /// swapped out here, so it comes back ahead of new arrivals as soon as its blocks fit, its KV
    /// is asked for (`takeSwapIns`) and it runs once that is back (`swapInDone`); a lost copy is
    /// recomputed (`swapInFailed`). A request with no KV computed simply waits first in line.
    public mutating func adoptStaged(_ st: SequenceState, at t: Double) {
        advance(to: t, before: true)
        var s = Sequence(id: st.id, prompt: st.prompt, decode: st.decode, arrived: st.arrived, ready: st.arrived)
        s.admitted = st.admitted; s.generated = st.generated; s.computed = st.computed
        s.firstToken = st.firstToken; s.lastToken = st.lastToken; s.gapSum = st.gapSum; s.maxGap = st.maxGap; s.preemptions = st.preemptions
        s.resumed = st.lastToken != nil
        s.blocks = blocks(for: st.computed)
        guard s.blocks > 0 else { s.computed = 0; waiting.insert(s, at: 0); if time < t { time = t }; return }
        s.remote = true
        swapped.append(s)
        if time < t { time = t }
    }

    private static func export(_ s: Sequence) -> SequenceState {
        SequenceState(id: s.id, prompt: s.prompt, decode: s.decode, generated: s.generated, computed: s.computed, arrived: s.arrived,
                      admitted: s.admitted, firstToken: s.firstToken, lastToken: s.lastToken, gapSum: s.gapSum, maxGap: s.maxGap, preemptions: s.preemptions)
    }

    // MARK: the step loop

    /// Runs every step that starts at or before `t` (before it, when `before`: a request arriving
    /// at `t` joins a step that starts at `t`).
    public mutating func advance(to t: Double, before: Bool = false) {
        while !isIdle && !stalled && !waitingForSwapIn {
            let start = running.isEmpty && swapped.isEmpty ? max(time, waiting[0].ready) : time
            guard before ? start < t : start <= t else { return }
            step(at: start)
        }
    }

    private func blocks(for tokens: Int) -> Int { (tokens + config.blockTokens - 1) / config.blockTokens }

    /// Preempts running sequence `k` (the newest): recompute frees its blocks and puts it first in
    /// the waiting queue; swap moves its blocks to host memory when there is room there; a remote
    /// swap (when `remoteSwap` says so) moves them to a memory host.
    private mutating func preempt(_ k: Int, at start: Double) {
        var s = running.remove(at: k)
        s.preemptions += 1
        preemptions += 1
        freeBlocks += s.blocks
        if s.blocks > 0 && s.computed > 0, let decide = remoteSwap, decide(s.blocks, s.computed) {
            s.remote = true; s.fetchRequested = false; s.fetchedAt = nil
            remoteSwaps += 1
            swapOuts.append(SwapEvent(id: s.id, blocks: s.blocks, tokens: s.computed, at: start))
            swapped.append(s)
        } else if config.preemption == .swap && s.blocks <= freeSwapBlocks {
            freeSwapBlocks -= s.blocks
            swapped.append(s)
        } else {
            s.blocks = 0
            s.computed = 0
            waiting.insert(s, at: 0)
        }
    }

    private static func older(_ a: Sequence, _ b: Sequence) -> Bool { (a.arrived, a.id) < (b.arrived, b.id) }

    private mutating func step(at start: Double) {
        // 1. Each decoding sequence, oldest first, gets room for its next token; when blocks run
        //    out the newest running sequence is preempted (possibly the one asking).
        running.sort(by: Self.older)
        var k = 0
        while k < running.count {
            let need = running[k].prefilling ? 0 : blocks(for: running[k].computed + 1) - running[k].blocks
            if need <= freeBlocks {
                freeBlocks -= need
                running[k].blocks += need
                k += 1
            } else {
                preempt(running.count - 1, at: start)
            }
        }
        // 2. Swapped sequences come back, oldest first, while their blocks fit (with one to grow).
        //    One swapped to a memory host has its blocks reserved and its KV asked for; it runs
        //    once the KV is back (`swapInDone`).
        swapped.sort(by: Self.older)
        // Sequences whose KV is on its way back hold a running slot already.
        var fetching = swapped.reduce(0) { $0 + ($1.fetchRequested ? 1 : 0) }
        var i = 0
        while i < swapped.count, running.count + fetching - (swapped[i].fetchRequested ? 1 : 0) < config.maxRunning {
            let s = swapped[i]
            if s.remote {
                if let at = s.fetchedAt {
                    if at <= start {
                        swapped.remove(at: i); fetching -= 1
                        var r = s; r.remote = false; r.fetchRequested = false; r.fetchedAt = nil
                        running.append(r)
                    } else { i += 1 }
                    continue
                }
                if s.fetchRequested { i += 1; continue }
                guard s.blocks + 1 <= freeBlocks else { break }
                freeBlocks -= s.blocks
                swapped[i].fetchRequested = true
                fetching += 1
                swapIns.append(SwapEvent(id: s.id, blocks: s.blocks, tokens: s.computed, at: start))
                i += 1
                continue
            }
            guard s.blocks + 1 <= freeBlocks else { break }
            swapped.remove(at: i)
            freeSwapBlocks += s.blocks
            freeBlocks -= s.blocks
            running.append(s)
        }
        // 3. Waiting sequences are admitted first come, first served, with blocks for their whole
        //    prompt (so a chunked prefill never stalls half-way), while slots and blocks last.
        while let s = waiting.first, s.ready <= start, running.count < config.maxRunning, swapped.isEmpty {
            let need = blocks(for: s.target)
            guard need <= freeBlocks else { break }
            waiting.removeFirst()
            freeBlocks -= need
            var admitted = s
            admitted.blocks = need
            if admitted.admitted == nil { admitted.admitted = start }
            running.append(admitted)
        }
        // The step: one token per decoding sequence, then prefill chunks within the token budget.
        var work: [(index: Int, tokens: Int)] = []
        var tokens = 0
        var kvRead = 0.0
        for (k, s) in running.enumerated() where !s.prefilling {
            work.append((k, 1))
            tokens += 1
            kvRead += Double(s.computed)
        }
        for (k, s) in running.enumerated() where s.prefilling && tokens < config.maxBatchedTokens {
            let chunk = min(s.target - s.computed, config.maxBatchedTokens - tokens)
            work.append((k, chunk))
            tokens += chunk
            kvRead += Double(s.computed) + Double(chunk) / 2
        }
        guard !work.isEmpty else {
            // Nothing can run now: time moves on to the next arrival or swapped-in KV; when only
            // KV still on its way from a memory host can unblock it, the engine waits for it.
            let next = (waiting.map(\.ready) + swapped.compactMap(\.fetchedAt)).filter { $0 > start }.min()
            if next == nil && swapped.contains(where: { $0.fetchRequested && $0.fetchedAt == nil }) { waitingForSwapIn = true; time = max(time, start); return }
            time = next ?? start + 0.001
            return
        }
        let end = start + max(model.iteration(tokens: Double(tokens)) + model.attention(kvTokens: kvRead), weightStreamSeconds)
        steps += 1
        var finished = false
        for (k, n) in work {
            var s = running[k]
            let decoding = !s.prefilling
            s.computed += n
            // A decode step, or the step that completes the prefill, emits one output token.
            if decoding || !s.prefilling {
                if let last = s.lastToken {
                    let gap = end - last; s.gapSum += gap; s.maxGap = max(s.maxGap, gap)
                    if s.resumed { resumeGaps[s.id] = gap }
                }
                s.resumed = false
                if s.firstToken == nil { s.firstToken = end; if tracksPrefill { prefilled.append((s.id, end)) } }
                s.lastToken = end
                s.generated += 1
            }
            if s.generated >= s.decode {
                let gaps = s.decode - 1
                done.append(Finished(id: s.id, arrived: s.arrived, admitted: s.admitted ?? s.arrived, firstToken: s.firstToken!, finished: end,
                                     meanTBT: gaps > 0 ? s.gapSum / Double(gaps) : 0, maxTBT: s.maxGap, preemptions: s.preemptions))
                freeBlocks += s.blocks
                s.blocks = 0
                s.decode = -1   // marks it for removal below
                finished = true
            }
            running[k] = s
        }
        if finished { running.removeAll { $0.decode < 0 } }
        time = end
    }
}
