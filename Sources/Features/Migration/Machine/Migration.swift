/// Live migration of one inference request between two replicas, as the two agents run it
/// (Llumnix's protocol as the floor). Pure: each side's machine takes events with a time and
/// returns directives its handler carries out on the serving engine and the data plane.
///
/// 1. The source asks the destination to reserve blocks for the request as it is (its KV so far and
///    a block to grow into); the destination refuses when it lacks room, and sets more aside when
///    later stages bring more.
/// 2. Live: stage 1 copies every block computed so far while the request keeps decoding on the
///    source; each further stage copies the blocks added meanwhile. When what remains would copy
///    within the downtime budget at the measured bandwidth (and stages no longer shrink it, see
///    `settleBlocks`), the source suspends the request after its current step and sends the rest
///    with the request's state; the destination commits and resumes decoding; the source frees. A stage cap aborts a migration that never converges.
/// 3. Baselines in the same path: `blocking` suspends at once and copies everything; `recompute`
///    suspends at once and sends only the state (the destination prefills again).
///
/// 4. Staging (when the plan allows it and a memory host is at hand): a destination with no room
///    yet does not end the migration. The source suspends the request, puts all its KV on a
///    memory host, and hands the destination the request's state with where its KV is; the
///    destination queues it as a request swapped out to that host, which comes back ahead of new
///    arrivals as soon as its blocks fit. The source is emptied at once (a drain or a make-room
///    move need not wait for room elsewhere).
///
/// Every abort leaves the request served by exactly one replica: before the final stage it keeps
/// running on the source; once suspended, the destination holds it.
public enum MigrationMethod: String, Sendable, CaseIterable { case live, blocking, recompute }

public enum MigrationAbort: Error, Equatable, Sendable, CustomStringConvertible {
    case destinationFull(String)
    case requestFinished
    case requestPreempted
    case destinationFailed(String)
    case stageCap(Int)
    case cancelled(String)
    case stagingFailed(String)

    public var description: String {
        switch self {
        case .destinationFull(let why): return "destination has no room: \(why)"
        case .requestFinished: return "the request finished on the source first"
        case .requestPreempted: return "the request was preempted on the source"
        case .destinationFailed(let why): return "destination failed: \(why)"
        case .stageCap(let n): return "did not converge within \(n) stages"
        case .cancelled(let why): return "cancelled: \(why)"
        case .stagingFailed(let why): return "could not stage the KV on a memory host: \(why)"
        }
    }
}

/// How a migration decides its last stage.
public struct MigrationPlan: Sendable, Equatable {
    public var method: MigrationMethod
    /// Bytes of one KV block (after `kv_bytes_scale`), and the data plane's measured bandwidth.
    public var blockBytes: Double
    public var bandwidthBytesPerSecond: Double
    /// The stall the final stage may add to the request (seconds).
    public var downtimeBudget = 0.02
    public var stageCap = 8
    /// Once what remains fits the budget, copying goes on in stages while more than this many
    /// whole blocks remain and each stage is smaller than the one before: the final stage then
    /// holds what the request adds during one short stage (usually just its partly filled block),
    /// so the downtime is about the same at any sequence length rather than anything up to the
    /// budget. The budget stays the bound: a remainder within it that stopped shrinking, or one
    /// at the stage cap, goes final.
    public var settleBlocks = 0
    /// A destination without room gets the request through a memory host (see 4. above) instead
    /// of the migration ending.
    public var staging = false
    public init(method: MigrationMethod, blockBytes: Double, bandwidthBytesPerSecond: Double) {
        self.method = method; self.blockBytes = blockBytes; self.bandwidthBytesPerSecond = bandwidthBytesPerSecond
    }

    /// Blocks that copy within the downtime budget: the final stage's size (at least one).
    public var finalStageBlocks: Int { finalStageBlocks(bandwidth: bandwidthBytesPerSecond) }

    public func finalStageBlocks(bandwidth: Double) -> Int {
        guard blockBytes > 0, bandwidth > 0 else { return 1 }
        return max(1, Int(downtimeBudget * bandwidth / blockBytes))
    }
}

/// The source side of one migration.
public struct MigrationSource: Sendable {
    public enum Phase: Equatable, Sendable {
        case reserving
        case copying(stage: Int)
        /// Suspended after its step: the final copy (blocks and state) is under way.
        case finalCopy
        /// The final copy arrived; waiting for the destination to commit.
        case committing
        case done
        case aborted(MigrationAbort)
    }
    public enum Directive: Equatable, Sendable {
        /// Ask the destination to reserve this many blocks.
        case reserve(blocks: Int)
        /// Send these blocks while the request keeps decoding here.
        case copy(stage: Int, blocks: Range<Int>)
        /// Take the request out of the engine after the step in flight (then call `suspended`).
        case suspend
        /// Send these blocks and the request's state.
        case copyFinal(blocks: Range<Int>)
        /// Staging: put these blocks on a memory host (then call `stagedOut`).
        case stageOut(blocks: Range<Int>)
        /// Staging: hand the destination the request's state and where its KV waits (then call
        /// `committed`, or `destinationFailed`).
        case handOver(blocks: Int)
        /// Staging failed after the put: delete what the memory host holds of it.
        case dropStaged
        /// The destination has it: free the request's blocks and state here.
        case free
        /// The destination failed after the suspension: put the request back on this engine
        /// from the state and KV kept since `suspend`.
        case resumeHere
        /// Tell the destination to drop what it reserved and received.
        case abortDestination(MigrationAbort)
        /// The outcome, for the coordinator (durable there).
        case report(Phase)
    }

    public let request: String
    public let plan: MigrationPlan
    public private(set) var phase = Phase.reserving
    /// Blocks sent in earlier stages.
    public private(set) var sent = 0
    public private(set) var stages = 0
    public let startedAt: Double
    public private(set) var suspendedAt: Double?
    /// The bandwidth the last stage achieved (blocks × block bytes ÷ its time): the final stage is
    /// sized with it once known, the plan's figure until then.
    public private(set) var measuredBandwidth: Double?
    private var stageStarted: (at: Double, blocks: Int)?
    /// The engine gave the request up (`suspended` was called).
    private var outOfEngine = false
    /// Going through a memory host (the destination had no room), and the blocks put there.
    public private(set) var staged = false
    public private(set) var stagedBlocks = 0

    /// Starts a migration of `request`, asking the destination to set `totalBlocks` aside.
    public static func start(request: String, plan: MigrationPlan, totalBlocks: Int, at now: Double) -> (MigrationSource, [Directive]) {
        (MigrationSource(request: request, plan: plan, startedAt: now), [.reserve(blocks: totalBlocks)])
    }

    init(request: String, plan: MigrationPlan, startedAt: Double) {
        self.request = request; self.plan = plan; self.startedAt = startedAt
    }

    /// The destination answered the reservation; `computed` is how many full blocks of KV the
    /// request has now (a partly filled block waits for the final stage).
    public mutating func reserved(_ ok: Bool, reason: String = "", computed: Int, at now: Double) -> [Directive] {
        guard phase == .reserving else { return [] }
        guard ok else {
            guard plan.staging else { return abort(.destinationFull(reason), tellDestination: false) }
            staged = true
            phase = .finalCopy
            suspendedAt = now
            return [.suspend]
        }
        switch plan.method {
        case .blocking, .recompute:
            phase = .finalCopy
            suspendedAt = now
            return [.suspend]
        case .live:
            return nextStage(computed: computed, at: now)
        }
    }

    /// A copy stage was delivered; the request now has `computed` blocks.
    public mutating func stageCopied(computed: Int, at now: Double) -> [Directive] {
        guard case .copying = phase else { return [] }
        if let s = stageStarted, now > s.at, s.blocks > 0 { measuredBandwidth = Double(s.blocks) * plan.blockBytes / (now - s.at) }
        return nextStage(computed: computed, at: now)
    }

    private mutating func nextStage(computed: Int, at now: Double) -> [Directive] {
        let remaining = computed - sent
        let withinBudget = remaining <= plan.finalStageBlocks(bandwidth: measuredBandwidth ?? plan.bandwidthBytesPerSecond)
        let shrinking = stageStarted.map { remaining < $0.blocks } ?? true
        if withinBudget && (remaining <= plan.settleBlocks || !shrinking || stages >= plan.stageCap) {
            phase = .finalCopy
            suspendedAt = now
            return [.suspend]
        }
        guard stages < plan.stageCap else { return abort(.stageCap(plan.stageCap), tellDestination: true) }
        stages += 1
        let range = sent..<computed
        sent = computed
        stageStarted = (now, range.count)
        phase = .copying(stage: stages)
        return [.copy(stage: stages, blocks: range)]
    }

    /// The request is out of the source's engine with `computed` blocks: send the rest and its state.
    public mutating func suspended(computed: Int, at now: Double) -> [Directive] {
        guard phase == .finalCopy, !outOfEngine else { return [] }
        outOfEngine = true
        if staged { return [.stageOut(blocks: 0..<computed)] }
        let range = plan.method == .recompute ? 0..<0 : sent..<max(sent, computed)
        sent = range.upperBound
        return [.copyFinal(blocks: range)]
    }

    /// Staging: the memory host has the blocks (`ok`), or the put failed and the request resumes here.
    public mutating func stagedOut(_ ok: Bool, reason: String = "", blocks: Int = 0, at now: Double) -> [Directive] {
        guard phase == .finalCopy, staged, outOfEngine else { return [] }
        guard ok else {
            phase = .aborted(.stagingFailed(reason))
            return [.dropStaged, .resumeHere, .report(phase)]
        }
        stagedBlocks = blocks
        phase = .committing
        return [.handOver(blocks: blocks)]
    }

    /// The final copy arrived at the destination.
    public mutating func finalDelivered(at now: Double) -> [Directive] {
        guard phase == .finalCopy else { return [] }
        phase = .committing
        return []
    }

    /// The destination committed and resumed the request.
    public mutating func committed(at now: Double) -> [Directive] {
        guard phase == .committing || phase == .finalCopy else { return [] }
        phase = .done
        return [.free, .report(.done)]
    }

    /// The request finished, or was preempted, on the source while it still ran there (also in
    /// the step the suspension waited for).
    public mutating func requestEnded(preempted: Bool) -> [Directive] {
        switch phase {
        case .reserving, .copying: return abort(preempted ? .requestPreempted : .requestFinished, tellDestination: true)
        case .finalCopy where !outOfEngine: return abort(preempted ? .requestPreempted : .requestFinished, tellDestination: !staged)
        default: return []   // out of the engine: it no longer runs here
        }
    }

    /// The destination failed (a data-plane error, its node died, it refused a chunk) before it
    /// committed. Before the final stage the request simply keeps running here; after the
    /// suspension it resumes here from what the source kept. (A destination that committed and
    /// then died loses the request with its node; the coordinator re-routes it from its record.)
    public mutating func destinationFailed(_ why: String) -> [Directive] {
        switch phase {
        case .reserving, .copying: return abort(.destinationFailed(why), tellDestination: false)
        case .finalCopy, .committing:
            phase = .aborted(.destinationFailed(why))
            return (staged && stagedBlocks > 0 ? [.dropStaged] : []) + [.resumeHere, .report(phase)]
        default: return []
        }
    }

    public mutating func cancel(_ why: String) -> [Directive] {
        switch phase {
        case .reserving, .copying: return abort(.cancelled(why), tellDestination: true)
        default: return []
        }
    }

    private mutating func abort(_ a: MigrationAbort, tellDestination: Bool) -> [Directive] {
        phase = .aborted(a)
        return (tellDestination ? [.abortDestination(a)] : []) + [.report(phase)]
    }

    /// Whether the request is the source's: until the final stage, and again after any abort.
    /// Between the suspension and the commit it runs nowhere (the downtime).
    public var sourceOwns: Bool {
        switch phase {
        case .reserving, .copying, .aborted: return true
        case .finalCopy, .committing, .done: return false
        }
    }
}

/// The destination side of one migration.
public struct MigrationDestination: Sendable {
    public enum Phase: Equatable, Sendable { case receiving, resumed, released, orphaned }
    public enum Directive: Equatable, Sendable {
        /// Resume the request on the engine with the KV of `blocks` blocks (the rest is recomputed).
        case resume(blocks: Int)
        /// Give the reserved blocks back.
        case release(blocks: Int)
        /// The source died mid-copy: the coordinator decides; `blocks` arrived whole.
        case reportPartial(blocks: Int)
    }

    public let request: String
    public private(set) var reservedBlocks: Int
    public private(set) var phase = Phase.receiving
    /// Blocks received in order so far.
    public private(set) var received = 0

    /// A reservation, or why `free` blocks cannot hold it.
    public static func reserve(request: String, blocks: Int, free: Int) -> Result<MigrationDestination, MigrationAbort> {
        guard blocks <= free else { return .failure(.destinationFull("request \(request) needs \(blocks) blocks, \(free) free")) }
        return .success(MigrationDestination(request: request, reservedBlocks: blocks))
    }

    init(request: String, reservedBlocks: Int) { self.request = request; self.reservedBlocks = reservedBlocks }

    /// The request grew on the source past what was set aside: `n` more blocks are reserved.
    public mutating func extend(by n: Int) {
        guard phase == .receiving, n > 0 else { return }
        reservedBlocks += n
    }

    /// Blocks arrived (from a stage or the final copy). They must follow on from what arrived and
    /// fit the reservation; otherwise the error names the problem (the migration then aborts).
    public mutating func receive(_ blocks: Range<Int>) -> String? {
        guard phase == .receiving else { return "blocks \(blocks) for request \(request), whose migration is \(phase)" }
        guard blocks.lowerBound == received else { return "blocks \(blocks) for request \(request) out of order: \(received) arrived so far" }
        guard blocks.upperBound <= reservedBlocks else { return "blocks \(blocks) for request \(request) exceed its \(reservedBlocks) reserved" }
        received = blocks.upperBound
        return nil
    }

    /// The final copy is complete with the request's state: resume it here.
    public mutating func commit() -> [Directive] {
        guard phase == .receiving else { return [] }
        phase = .resumed
        return [.resume(blocks: received)]
    }

    /// The source aborted before the final stage (or gave up on an orphaned copy): drop everything.
    public mutating func abort() -> [Directive] {
        guard phase == .receiving || phase == .orphaned else { return [] }
        phase = .released
        return [.release(blocks: reservedBlocks)]
    }

    /// The source died mid-copy: keep what arrived and ask the coordinator.
    public mutating func sourceFailed() -> [Directive] {
        guard phase == .receiving else { return [] }
        phase = .orphaned
        return [.reportPartial(blocks: received)]
    }

    /// The coordinator decided for an orphaned copy: resume the request from what arrived (the
    /// rest recomputed), or drop it (the request went elsewhere).
    public mutating func resolve(resume: Bool) -> [Directive] {
        guard phase == .orphaned else { return [] }
        phase = resume ? .resumed : .released
        return resume ? [.resume(blocks: received)] : [.release(blocks: reservedBlocks)]
    }
}
