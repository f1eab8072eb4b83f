/// When to migrate running inference requests between instances (replicas of one service): the
/// global policies of the migration feature. Pure and shared by the coordinator and the twin.

/// A running request as the policy sees it.
public struct RequestLoad: Sendable, Equatable {
    public var id: String
    /// KV blocks it holds now (what a migration copies).
    public var blocks: Int
    /// Output tokens it still has to generate.
    public var remainingTokens: Int
    public var highPriority: Bool
    /// Seconds left before its SLO, at its current pace (negative: already late).
    public var sloSlack: Double
    public init(id: String, blocks: Int, remainingTokens: Int, highPriority: Bool = false, sloSlack: Double = .infinity) {
        self.id = id; self.blocks = blocks; self.remainingTokens = remainingTokens; self.highPriority = highPriority; self.sloSlack = sloSlack
    }
}

/// One instance's load.
public struct InstanceLoad: Sendable, Equatable {
    public enum Health: Sendable, Equatable { case alive, suspect, draining }
    public var id: String
    public var node: String
    public var totalBlocks: Int
    public var usedBlocks: Int
    /// Blocks the first waiting request needs (its prompt): what de-fragmentation makes room for.
    public var headOfQueueDemand: Int
    /// Oldest first, as the engine holds them: the last is the one it preempts first.
    public var running: [RequestLoad]
    public var health: Health
    public init(id: String, node: String, totalBlocks: Int, usedBlocks: Int, headOfQueueDemand: Int = 0, running: [RequestLoad] = [], health: Health = .alive) {
        self.id = id; self.node = node; self.totalBlocks = totalBlocks; self.usedBlocks = usedBlocks
        self.headOfQueueDemand = headOfQueueDemand; self.running = running; self.health = health
    }
}

public struct MigrationDecision: Sendable, Equatable {
    public enum Reason: String, Sendable { case balance, makeRoom = "make-room", priority, drain }
    public var request: String
    public var from: String
    public var to: String
    public var reason: Reason
    public init(request: String, from: String, to: String, reason: Reason) { self.request = request; self.from = from; self.to = to; self.reason = reason }
}

/// What a policy knows of the data plane and the blocks.
public struct MigrationCosts: Sendable {
    public var blockBytes: Double
    public var bandwidthBytesPerSecond: Double
    public var blockTokens = 16
    /// A memory host can hold a request's KV until its destination has room (migration staging):
    /// a drain need not wait for a destination with free blocks.
    public var staging = false
    public init(blockBytes: Double, bandwidthBytesPerSecond: Double) { self.blockBytes = blockBytes; self.bandwidthBytesPerSecond = bandwidthBytesPerSecond }
    /// Seconds to copy `blocks` blocks.
    public func copySeconds(_ blocks: Int) -> Double { Double(blocks) * blockBytes / max(1, bandwidthBytesPerSecond) }
}

public protocol MigrationPolicy: Sendable {
    var name: String { get }
    /// Whether new requests go to the freest replica by KV blocks (Llumnix's dispatching) rather
    /// than the one with the fewest outstanding requests.
    var dispatchesByFreeness: Bool { get }
    /// Whether it moves running requests for load (a drained node is emptied whatever the policy).
    var migrates: Bool { get }
    /// Migrations to start now; `busy` are requests already moving (never chosen twice).
    func decide(_ instances: [InstanceLoad], costs: MigrationCosts, busy: Set<String>) -> [MigrationDecision]
}

extension MigrationPolicy {
    public var dispatchesByFreeness: Bool { true }
    public var migrates: Bool { true }
}

public enum MigrationPolicies {
    public static let names = ["none", "dispatch", "llumnix", "slack"]
    public static func named(_ name: String) -> MigrationPolicy? {
        switch name {
        case "none": return NoMigration()
        case "dispatch": return DispatchOnly()
        case "llumnix": return LlumnixMigration()
        case "slack": return SlackAwareMigration()
        default: return nil
        }
    }
}

/// Dispatch only: requests stay where the router sent them (the replica with the fewest outstanding).
public struct NoMigration: MigrationPolicy {
    public let name = "none"
    public var dispatchesByFreeness: Bool { false }
    public var migrates: Bool { false }
    public init() {}
    public func decide(_ instances: [InstanceLoad], costs: MigrationCosts, busy: Set<String>) -> [MigrationDecision] { [] }
}

/// Llumnix's dispatching without its migration, to tell what each contributes: new requests go
/// to the freest replica by KV blocks; running ones stay.
public struct DispatchOnly: MigrationPolicy {
    public let name = "dispatch"
    public var migrates: Bool { false }
    public init() {}
    public func decide(_ instances: [InstanceLoad], costs: MigrationCosts, busy: Set<String>) -> [MigrationDecision] { [] }
}

/// Llumnix's policy (OSDI '24): each instance's freeness from its virtual usage, the physical
/// blocks plus the head-of-queue request's demand (de-fragmentation) plus headroom for its
/// high-priority requests, infinite on an instance being drained; freeness =
/// (total − virtual usage) ÷ running requests. Periodically the least free instance below the
/// threshold is paired with the freest above it, and the source's cheapest request (fewest
/// blocks) moves.
public struct LlumnixMigration: MigrationPolicy {
    public let name = "llumnix"
    /// Blocks kept free per high-priority request (its growth, without contention).
    public var headroomPerHighPriority = 64
    /// Freeness (blocks per running request: about how many blocks each can still grow by)
    /// below which an instance sheds load, and above which it takes it. Below 2 an instance's
    /// batch has about 32 decode steps of room left per request before it must preempt (below 0
    /// it cannot even admit the head of its queue); above 8 a destination keeps about 128.
    public var sourceBelow = 2.0
    public var destinationAbove = 8.0
    public init() {}

    /// Where a draining instance's request goes: the freest alive instance that has the free blocks
    /// to hold it (a drain does not wait for a destination to be comfortably free). With staging,
    /// when none has room, the alive instance with the most free blocks: the request's KV waits on
    /// a memory host until it has room, and the draining instance empties now.
    static func drainDestination(for q: RequestLoad, among all: [InstanceLoad], freeness: (InstanceLoad) -> Double, excluding: Set<String>,
                                 staging: Bool = false) -> InstanceLoad? {
        let alive = all.filter { $0.health == .alive && !excluding.contains($0.id) }
        if let d = alive.filter({ $0.totalBlocks - $0.usedBlocks - $0.headOfQueueDemand >= q.blocks }).max(by: { (freeness($0), $1.id) < (freeness($1), $0.id) }) {
            return d
        }
        guard staging else { return nil }
        return alive.max { ($0.totalBlocks - $0.usedBlocks - $0.headOfQueueDemand, $1.id) < ($1.totalBlocks - $1.usedBlocks - $1.headOfQueueDemand, $0.id) }
    }

    public func virtualUsage(_ i: InstanceLoad) -> Double {
        if i.health == .draining { return .infinity }
        let headroom = i.running.filter(\.highPriority).count * headroomPerHighPriority
        return Double(i.usedBlocks + i.headOfQueueDemand + headroom)
    }

    public func freeness(_ i: InstanceLoad) -> Double {
        let v = virtualUsage(i)
        if v.isInfinite { return -.infinity }
        return (Double(i.totalBlocks) - v) / Double(max(1, i.running.count))
    }

    public func decide(_ instances: [InstanceLoad], costs: MigrationCosts, busy: Set<String>) -> [MigrationDecision] {
        var sources = instances.filter { freeness($0) < sourceBelow && $0.running.contains { !busy.contains($0.id) } }
            .sorted { (freeness($0), $0.id) < (freeness($1), $1.id) }
        var destinations = instances.filter { $0.health == .alive && freeness($0) > destinationAbove }
            .sorted { (freeness($0), $0.id) > (freeness($1), $1.id) }
        var out: [MigrationDecision] = []
        var used = Set<String>()
        // Draining instances first: each request to the freest instance with room for it.
        for s in sources where s.health == .draining {
            guard let q = s.running.filter({ !busy.contains($0.id) }).min(by: { ($0.blocks, $0.id) < ($1.blocks, $1.id) }),
                  let d = Self.drainDestination(for: q, among: instances, freeness: freeness, excluding: used.union([s.id]), staging: costs.staging) else { continue }
            used.insert(s.id); used.insert(d.id)
            out.append(MigrationDecision(request: q.id, from: s.id, to: d.id, reason: .drain))
        }
        sources.removeAll { used.contains($0.id) || $0.health == .draining }
        destinations.removeAll { used.contains($0.id) }
        while let s = sources.first, let d = destinations.first, s.id != d.id {
            sources.removeFirst(); destinations.removeFirst()
            guard let q = s.running.filter({ !busy.contains($0.id) }).min(by: { ($0.blocks, $0.id) < ($1.blocks, $1.id) }) else { continue }
            let reason: MigrationDecision.Reason = s.headOfQueueDemand > s.totalBlocks - s.usedBlocks ? .makeRoom
                : s.running.contains(where: \.highPriority) ? .priority : .balance
            out.append(MigrationDecision(request: q.id, from: s.id, to: d.id, reason: reason))
        }
        return out
    }
}

/// Ours: what Llumnix does not use. A request is worth moving by the blocks it frees (now and as
/// it grows) per second of copy at the measured bandwidth; requests with little SLO slack are not
/// moved for balance (a migration's downtime could make them late) but are moved first off an
/// overloaded or failing instance, where staying costs them more; an instance on a node the
/// failure detector suspects is drained first, as if draining.
public struct SlackAwareMigration: MigrationPolicy {
    public let name = "slack"
    public var llumnix = LlumnixMigration()
    /// Slack below which a request is not moved just to balance load (seconds).
    public var minSlackToBalance = 2.0
    public init() {}

    public func decide(_ instances: [InstanceLoad], costs: MigrationCosts, busy: Set<String>) -> [MigrationDecision] {
        let seen = instances.map { i -> InstanceLoad in
            var i = i
            if i.health == .suspect { i.health = .draining }
            return i
        }
        func value(_ q: RequestLoad) -> Double {
            let freed = Double(q.blocks) + Double(q.remainingTokens) / Double(costs.blockTokens)
            return freed / max(1e-6, costs.copySeconds(q.blocks))
        }
        var sources = seen.filter { llumnix.freeness($0) < llumnix.sourceBelow }.sorted { (llumnix.freeness($0), $0.id) < (llumnix.freeness($1), $1.id) }
        var destinations = seen.filter { $0.health == .alive && llumnix.freeness($0) > llumnix.destinationAbove }
            .sorted { (llumnix.freeness($0), $0.id) > (llumnix.freeness($1), $1.id) }
        var out: [MigrationDecision] = []
        var used = Set<String>()
        // Off a failing or draining instance the least slack goes first, to the freest instance with room.
        for s in sources where s.health == .draining {
            guard let q = s.running.filter({ !busy.contains($0.id) }).min(by: { ($0.sloSlack, $0.id) < ($1.sloSlack, $1.id) }),
                  let d = LlumnixMigration.drainDestination(for: q, among: seen, freeness: llumnix.freeness, excluding: used.union([s.id]), staging: costs.staging) else { continue }
            used.insert(s.id); used.insert(d.id)
            out.append(MigrationDecision(request: q.id, from: s.id, to: d.id, reason: .drain))
        }
        sources.removeAll { used.contains($0.id) || $0.health == .draining }
        destinations.removeAll { used.contains($0.id) }
        while let s = sources.first, let d = destinations.first, s.id != d.id {
            sources.removeFirst(); destinations.removeFirst()
            // For balance only requests with slack to spare move: the most blocks freed per copy second.
            let candidates = s.running.filter { q in !busy.contains(q.id) && q.blocks <= d.totalBlocks - d.usedBlocks && q.sloSlack >= minSlackToBalance }
            guard let q = candidates.max(by: { (value($0), $1.id) < (value($1), $0.id) }) else { continue }
            let reason: MigrationDecision.Reason = s.headOfQueueDemand > s.totalBlocks - s.usedBlocks ? .makeRoom
                : s.running.contains(where: \.highPriority) ? .priority : .balance
            out.append(MigrationDecision(request: q.id, from: s.id, to: d.id, reason: reason))
        }
        return out
    }
}
