import Foundation
import Scheduling

/// A chunk's position in the world (16 × 16 columns of blocks each, as Minecraft's).
public struct ChunkPos: Hashable, Sendable, Comparable {
    public var x: Int32, z: Int32
    public init(x: Int32, z: Int32) { self.x = x; self.z = z }
    public static func < (a: ChunkPos, b: ChunkPos) -> Bool { (a.x, a.z) < (b.x, b.z) }
    public static func of(x: Double, z: Double) -> ChunkPos {
        ChunkPos(x: Int32((x / Double(VoxelWorld.chunkSize)).rounded(.down)), z: Int32((z / Double(VoxelWorld.chunkSize)).rounded(.down)))
    }
}

/// A block edit: placing (kind > 0) or removing (kind 0) the block at a position.
public struct BlockEdit: Equatable, Sendable {
    public var x: Int32, y: Int32, z: Int32
    public var kind: UInt8
    public init(x: Int32, y: Int32, z: Int32, kind: UInt8) { self.x = x; self.y = y; self.z = z; self.kind = kind }
    public var chunk: ChunkPos { ChunkPos.of(x: Double(x), z: Double(z)) }
}

/// What a player does in one tick (from its behaviour, or a real input message).
public struct PlayerAction: Equatable, Sendable {
    /// Walking direction (radians) and speed (blocks per second; 0 stands still).
    public var heading: Double
    public var speed: Double
    public var edit: BlockEdit?
    /// The input's sequence number and send time (player's wall clock, ns): echoed in the
    /// updates so input-to-frame latency can be measured.
    public var inputSequence: UInt64
    public var inputSentNanos: Int64
    public init(heading: Double = 0, speed: Double = 0, edit: BlockEdit? = nil, inputSequence: UInt64 = 0, inputSentNanos: Int64 = 0) {
        self.heading = heading; self.speed = speed; self.edit = edit; self.inputSequence = inputSequence; self.inputSentNanos = inputSentNanos
    }
}

/// What one player's renderer needs after a tick: the view's contents and what changed in it.
public struct PlayerView: Equatable, Sendable {
    public var tick: UInt64
    public var x: Double, z: Double
    public var visibleChunks: Int
    public var visibleEntities: Int
    /// Render work of the view relative to flat terrain (rougher terrain and edits cost more).
    public var complexity: Double
    /// Chunks that came into view this tick (their block data is sent) and edits inside the view.
    public var newChunks: Int
    public var editsInView: Int
    public var lastInputSequence: UInt64
    public var lastInputSentNanos: Int64
    /// Bytes of the state update this view needs: chunk data for new chunks, edits, entities.
    public var updateBytes: Int { 64 + newChunks * VoxelWorld.chunkUpdateBytes + editsInView * 16 + visibleEntities * 24 }
}

/// The authoritative world: voxel terrain in chunks, players, block edits and wandering entities,
/// advanced one tick at a time. Pure and deterministic for a seed (the server, tests and the twin
/// run the same code); the server measures how long each `tick` takes.
public struct VoxelWorld {
    public static let chunkSize: Int32 = 16
    public static let height: Int32 = 128
    /// Block data of one chunk as sent to a renderer (a compressed 16 × 16 × 128 column: ~4 KiB,
    /// the order of Minecraft's compressed chunk packets; an assumption of this model).
    public static let chunkUpdateBytes = 4096

    public struct Player: Equatable, Sendable {
        public var id: String
        public var x: Double, z: Double
        public var heading: Double = 0
        public var viewDistance: Int
        public var lastInputSequence: UInt64 = 0
        public var lastInputSentNanos: Int64 = 0
        /// Chunks this player's renderer has (sent already): only new ones are sent again.
        public var known: Set<ChunkPos> = []
    }
    public struct Entity: Equatable, Sendable { public var x: Double, z: Double, heading: Double }

    public enum EditError: Error, Equatable, CustomStringConvertible {
        case outOfWorld(BlockEdit), unknownPlayer(String), tooFar(BlockEdit)
        public var description: String {
            switch self {
            case .outOfWorld(let e): return "block edit at y=\(e.y) is outside the world (0..<\(VoxelWorld.height))"
            case .unknownPlayer(let p): return "no player '\(p)' in the world"
            case .tooFar(let e): return "block edit at (\(e.x), \(e.y), \(e.z)) is out of the player's reach"
            }
        }
    }

    public let seed: UInt64
    public let tickHz: Double
    /// Chunks sent to one renderer per tick at most (Minecraft paces chunk sending likewise).
    public var chunksPerTick = 16
    public private(set) var tick: UInt64 = 0
    public private(set) var players: [String: Player] = [:]
    public private(set) var entities: [Entity] = []
    /// Edited blocks (position → kind; 0 = air), over the generated terrain.
    public private(set) var edits: [ChunkPos: [SIMD3<Int32>: UInt8]] = [:]
    /// Edits made in the current tick, by chunk (sent to the players who see the chunk).
    private var editedThisTick: [ChunkPos: Int] = [:]
    public private(set) var editCount = 0
    private var rng: SplitMix64

    public init(seed: UInt64 = 1, tickHz: Double = 20, entities: Int = 64, spawnRadius: Double = 256) {
        self.seed = seed
        self.tickHz = tickHz
        rng = SplitMix64(seed: seed)
        for _ in 0..<entities {
            let a = rng.uniform() * 2 * .pi, r = rng.uniform() * spawnRadius
            self.entities.append(Entity(x: cos(a) * r, z: sin(a) * r, heading: rng.uniform() * 2 * .pi))
        }
    }

    // MARK: Terrain

    /// Terrain height of a column (deterministic value noise; hills of 8–40 blocks over sea level 64).
    public func terrainHeight(x: Int32, z: Int32) -> Int32 {
        func h(_ a: Int32, _ b: Int32) -> Double {
            var s = SplitMix64(seed: seed ^ UInt64(bitPattern: Int64(a) &* 73_856_093 ^ Int64(b) &* 19_349_663))
            return s.uniform()
        }
        let cell: Int32 = 32
        let cx = Int32((Double(x) / Double(cell)).rounded(.down)), cz = Int32((Double(z) / Double(cell)).rounded(.down))
        let fx = Double(x - cx * cell) / Double(cell), fz = Double(z - cz * cell) / Double(cell)
        let top = h(cx, cz) * (1 - fx) + h(cx + 1, cz) * fx
        let bottom = h(cx, cz + 1) * (1 - fx) + h(cx + 1, cz + 1) * fx
        return 64 + Int32((top * (1 - fz) + bottom * fz) * 32) - 8
    }

    /// The block at a position: an edit if there is one, else stone below the terrain height.
    public func block(x: Int32, y: Int32, z: Int32) -> UInt8 {
        let c = ChunkPos.of(x: Double(x), z: Double(z))
        if let k = edits[c]?[SIMD3(x, y, z)] { return k }
        return y < terrainHeight(x: x, z: z) ? 1 : 0
    }

    /// Render work of a chunk relative to flat terrain: height spread across its corners (hills
    /// show more faces) plus its edits.
    public func chunkComplexity(_ c: ChunkPos) -> Double {
        let x0 = c.x * VoxelWorld.chunkSize, z0 = c.z * VoxelWorld.chunkSize, s = VoxelWorld.chunkSize - 1
        let hs = [terrainHeight(x: x0, z: z0), terrainHeight(x: x0 + s, z: z0), terrainHeight(x: x0, z: z0 + s), terrainHeight(x: x0 + s, z: z0 + s)]
        let spread = Double(hs.max()! - hs.min()!)
        return 1 + spread / 16 + Double(edits[c]?.count ?? 0) / 64
    }

    // MARK: Players

    public mutating func join(_ id: String, viewDistance: Int = 8) {
        var r = SplitMix64(seed: seed ^ stableHash(id))
        players[id] = Player(id: id, x: r.uniform() * 64 - 32, z: r.uniform() * 64 - 32, viewDistance: max(2, min(32, viewDistance)))
    }

    public mutating func leave(_ id: String) { players[id] = nil }

    /// The renderer of a player changed (a new one knows no chunks yet: send them all again).
    public mutating func resetView(_ id: String) { players[id]?.known = [] }

    /// Applies one player's action for this tick. A block edit must be inside the world and within
    /// reach (8 blocks horizontally, as Minecraft's creative reach is about 5–6).
    public mutating func apply(_ action: PlayerAction, for id: String) throws {
        guard var p = players[id] else { throw EditError.unknownPlayer(id) }
        let dt = 1 / tickHz
        let speed = max(0, min(20, action.speed))
        p.heading = action.heading
        p.x += cos(action.heading) * speed * dt
        p.z += sin(action.heading) * speed * dt
        if action.inputSequence > p.lastInputSequence {
            p.lastInputSequence = action.inputSequence
            p.lastInputSentNanos = action.inputSentNanos
        }
        players[id] = p
        if let e = action.edit {
            guard (0..<VoxelWorld.height).contains(e.y) else { throw EditError.outOfWorld(e) }
            guard abs(Double(e.x) - p.x) <= 8, abs(Double(e.z) - p.z) <= 8 else { throw EditError.tooFar(e) }
            edits[e.chunk, default: [:]][SIMD3(e.x, e.y, e.z)] = e.kind
            editedThisTick[e.chunk, default: 0] += 1
            editCount += 1
        }
    }

    /// Chunks within a player's view distance (a disc of chunks around it).
    public func visibleChunks(of p: Player) -> [ChunkPos] {
        let c = ChunkPos.of(x: p.x, z: p.z)
        let r = Int32(p.viewDistance)
        var out: [ChunkPos] = []
        out.reserveCapacity(Int(4 * r * r))
        for dx in -r...r { for dz in -r...r where dx * dx + dz * dz <= r * r { out.append(ChunkPos(x: c.x + dx, z: c.z + dz)) } }
        return out
    }

    /// Advances the world one tick (entities wander) and returns every player's view. Chunks a
    /// player's renderer has not seen count as new (their data goes in the update).
    public mutating func step() -> [String: PlayerView] {
        tick += 1
        let dt = 1 / tickHz
        for i in entities.indices {
            if rng.uniform() < 0.05 { entities[i].heading += (rng.uniform() - 0.5) * .pi }
            entities[i].x += cos(entities[i].heading) * 1.5 * dt
            entities[i].z += sin(entities[i].heading) * 1.5 * dt
        }
        // Entities by chunk, so a view counts its own without scanning them all per player.
        var entitiesByChunk: [ChunkPos: Int] = [:]
        for e in entities { entitiesByChunk[ChunkPos.of(x: e.x, z: e.z), default: 0] += 1 }
        var views: [String: PlayerView] = [:]
        var complexityCache: [ChunkPos: Double] = [:]
        for id in players.keys.sorted() {
            var p = players[id]!
            let visible = visibleChunks(of: p)
            var ents = 0, editsSeen = 0
            var complexity = 0.0
            var missing: [ChunkPos] = []
            for c in visible {
                ents += entitiesByChunk[c] ?? 0
                editsSeen += editedThisTick[c] ?? 0
                if !p.known.contains(c) { missing.append(c) }
                if let k = complexityCache[c] { complexity += k } else {
                    let k = chunkComplexity(c); complexityCache[c] = k; complexity += k
                }
            }
            // Chunks go out a few per tick, nearest first (as Minecraft streams them): a renderer
            // that starts cold fills its view over a few ticks instead of one burst that would
            // hold everything else on the player's link back.
            let fresh = min(missing.count, chunksPerTick)
            if !missing.isEmpty || p.known.count > visible.count {
                let centre = ChunkPos.of(x: p.x, z: p.z)
                let send = missing.sorted { a, b in
                    let da = (a.x - centre.x) * (a.x - centre.x) + (a.z - centre.z) * (a.z - centre.z)
                    let db = (b.x - centre.x) * (b.x - centre.x) + (b.z - centre.z) * (b.z - centre.z)
                    return (da, a) < (db, b)
                }.prefix(fresh)
                // Keep only what is in view: a renderer drops chunks it no longer shows.
                p.known = p.known.intersection(visible).union(send)
                players[id] = p
            }
            views[id] = PlayerView(tick: tick, x: p.x, z: p.z, visibleChunks: visible.count, visibleEntities: ents,
                                   complexity: complexity / Double(max(1, visible.count)), newChunks: fresh, editsInView: editsSeen,
                                   lastInputSequence: p.lastInputSequence, lastInputSentNanos: p.lastInputSentNanos)
        }
        editedThisTick.removeAll(keepingCapacity: true)
        return views
    }
}

/// Meterstick's view of a server's ticks: duration percentiles and variability, the sum of
/// |tᵢ − tᵢ₋₁| over consecutive ticks with each duration clamped at the tick interval.
public struct TickStats: Sendable {
    public let intervalSeconds: Double
    public private(set) var durations: [Double] = []
    public private(set) var variability = 0.0
    /// Ticks that took longer than the interval (the server fell behind).
    public private(set) var overruns = 0
    private var last: Double?

    public init(tickHz: Double) { intervalSeconds = 1 / tickHz }

    public mutating func record(seconds: Double) {
        durations.append(seconds)
        if seconds > intervalSeconds { overruns += 1 }
        let clamped = min(seconds, intervalSeconds)
        if let l = last { variability += abs(clamped - l) }
        last = clamped
    }

    public func percentile(_ p: Double) -> Double {
        guard !durations.isEmpty else { return 0 }
        let s = durations.sorted()
        return s[min(s.count - 1, Int((p / 100 * Double(s.count - 1)).rounded()))]
    }
    public var mean: Double { durations.isEmpty ? 0 : durations.reduce(0, +) / Double(durations.count) }
}
