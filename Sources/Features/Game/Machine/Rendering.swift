import Foundation
import Scheduling

/// A stable 64-bit hash of a name (FNV-1a): seeds per player that are the same in every process
/// (Swift's `hashValue` is randomised per process).
public func stableHash(_ s: String) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in s.utf8 { h ^= UInt64(b); h = h &* 0x0000_0100_0000_01B3 }
    return h
}

/// Frame costs, emulated from scene complexity and GPU throughput (no GPU renders here: every
/// figure this produces is labelled emulated). The work per frame is this model's assumption,
/// stated with its reasoning; the GPUs' throughput is from their datasheets (`DeviceCatalog`).
public enum FrameModel {
    /// GFLOP of work per visible chunk of flat terrain, per frame (assumption: 16 MFLOP, so at a
    /// view distance of 8 chunks with a fifth of the GPU busy elsewhere a 1.6 TFLOPS handheld
    /// renders at about 45–50 FPS and a 1.2 TFLOPS phone at about 35, the range voxel games reach
    /// on such devices at that distance).
    public static let gflopPerChunk = 0.016
    public static let gflopPerEntity = 0.05
    /// Fraction of peak FP32 a renderer achieves (assumption).
    public static let efficiency = 0.3
    /// Meshing a chunk that came into view, ms of device time (assumption: the CPU/GPU work that
    /// makes local rendering stutter when a player moves fast).
    public static let meshMsPerNewChunk = 1.5
    /// Displays refresh at 60 Hz: nothing shows faster.
    public static let displayHz = 60.0
    /// Hardware video encode and decode of one 720p frame, ms (assumption, NVENC/phone decoder class).
    public static let encodeMs = 3.0, decodeMs = 2.0

    public static func frameGFLOP(_ v: PlayerView) -> Double {
        Double(v.visibleChunks) * v.complexity * gflopPerChunk + Double(v.visibleEntities) * gflopPerEntity
    }

    /// A local frame on a device: work over the GPU budget left by other load, plus meshing of
    /// new chunks, with lognormal variability (σ grows with the device's load: a busy or thermally
    /// limited device stutters more).
    public static func localFrameMs(_ v: PlayerView, tflops: Double, otherLoad: Double, rng: inout SplitMix64) -> Double {
        let budget = max(0.05, 1 - otherLoad) * tflops * efficiency
        let base = frameGFLOP(v) / budget + Double(v.newChunks) * meshMsPerNewChunk / max(0.3, tflops / 1.6)
        let sigma = 0.18 + 0.35 * otherLoad
        return max(1000 / displayHz, rng.logNormal(median: base, sigma: sigma))
    }

    /// The FPS a device would render a view at, without noise or meshing (the policy's estimate
    /// for a player that is not rendering locally now).
    public static func expectedLocalFPS(_ v: PlayerView, tflops: Double, otherLoad: Double) -> Double {
        let budget = max(0.05, 1 - otherLoad) * tflops * efficiency
        return 1000 / max(1000 / displayHz, frameGFLOP(v) / budget)
    }

    /// A remote frame on a render site's GPU shared by `slots` renderers, plus encoding.
    public static func remoteRenderMs(_ v: PlayerView, siteTFLOPS: Double, slots: Int) -> Double {
        frameGFLOP(v) / (siteTFLOPS * efficiency / Double(max(1, slots))) + encodeMs
    }

    /// Stream bitrate for a link (Mbit/s): 4 Mbit/s at 720p60 (assumption, the order of cloud
    /// gaming's 720p tier), never more than 60 % of the link.
    public static func streamMbps(linkMbps: Double) -> Double { min(4, 0.6 * linkMbps) }

    /// Device memory (GiB) while rendering locally (client plus chunk meshes and data) or playing
    /// a stream (client without meshes, plus decode buffers). Assumptions: 0.75 GiB client,
    /// 3 MiB per visible chunk, 96 MiB of decoder.
    public static func deviceMemoryGiB(local: Bool, visibleChunks: Int) -> Double {
        local ? 0.75 + Double(visibleChunks) * 3 / 1024 : 0.75 + 96.0 / 1024
    }

    /// Device power (W): idle plus the GPU's share when rendering locally; idle plus decode and
    /// radio when streaming (radio power per class is this model's assumption).
    public static func deviceWatts(_ d: DeviceProfile, local: Bool, gpuBusy: Double, network: String) -> Double {
        if local { return d.idleWatts + d.renderWatts * min(1, gpuBusy) }
        let radio: Double = ["4g": 2.5, "5g": 3.0, "wifi": 1.0, "wired": 0.3][network] ?? 1.0
        return d.idleWatts + 0.8 + radio
    }
}

/// How a player behaves (Yardstick/Meterstick-like workloads): its actions per tick.
public enum Behaviour: String, CaseIterable, Sendable {
    case idle, randomWalk = "random-walk", explore, build

    public static func named(_ s: String) -> Behaviour? { Behaviour(rawValue: s.lowercased()) }

    /// The next action of a player at `position` (deterministic for the rng).
    public func action(x: Double, z: Double, heading: Double, tick: UInt64, rng: inout SplitMix64) -> PlayerAction {
        switch self {
        case .idle:
            return PlayerAction(heading: heading, speed: 0)
        case .randomWalk:
            // Walk (4.3 blocks/s, Minecraft's walking speed), turning now and then, pausing sometimes.
            let turn = rng.uniform() < 0.05 ? (rng.uniform() - 0.5) * .pi : 0
            return PlayerAction(heading: heading + turn, speed: rng.uniform() < 0.1 ? 0 : 4.3)
        case .explore:
            // Sprint (5.6 blocks/s) in a slowly bending line: always reaching new chunks.
            return PlayerAction(heading: heading + (rng.uniform() - 0.5) * 0.02, speed: 5.6)
        case .build:
            // Stay near and place or break a block about twice a second.
            var a = PlayerAction(heading: heading + (rng.uniform() - 0.5) * 0.3, speed: rng.uniform() < 0.2 ? 1 : 0)
            if rng.uniform() < 0.1 {
                let bx = Int32(x.rounded()) + Int32(rng.uniform() * 9) - 4, bz = Int32(z.rounded()) + Int32(rng.uniform() * 9) - 4
                a.edit = BlockEdit(x: bx, y: 64 + Int32(rng.uniform() * 16), z: bz, kind: rng.uniform() < 0.7 ? UInt8(1 + rng.uniform() * 8) : 0)
            }
            return a
        }
    }
}

/// What a player sees, measured per frame and summarised per window: frames per second, frame
/// time P50/P99, FPS range, input-to-frame latency, bytes in and out, memory and energy.
public struct PlayerMeter: Sendable {
    public struct Window: Equatable, Sendable {
        public var startSeconds: Double
        public var frames: Int
        public var fps: Double
        /// Where frames came from when the window closed (the player's label then).
        public var label: String
    }
    /// Stamped on each window as it closes (where the player renders).
    public var label = ""
    public let windowSeconds: Double
    public private(set) var windows: [Window] = []
    public private(set) var frameTimesMs: [Double] = []
    public private(set) var inputLatencyMs: [Double] = []
    public private(set) var lastFrameAt: Double?
    public private(set) var framesShown = 0
    /// The longest time without a frame (s), and when it ended.
    public private(set) var longestGap = 0.0
    public var bytesIn: UInt64 = 0, bytesOut: UInt64 = 0
    public var energyJoules = 0.0
    private var windowStart: Double
    private var framesInWindow = 0

    public init(start: Double, windowSeconds: Double = 1) { self.windowSeconds = windowSeconds; windowStart = start }

    /// A frame shown at `t` (seconds).
    public mutating func frame(at t: Double, inputLatencyMs: Double? = nil) {
        roll(to: t)
        if let l = lastFrameAt {
            let dt = t - l
            frameTimesMs.append(dt * 1000)
            longestGap = max(longestGap, dt)
        }
        lastFrameAt = t
        framesShown += 1
        framesInWindow += 1
        if let i = inputLatencyMs { self.inputLatencyMs.append(i) }
    }

    /// Closes the windows that ended before `t`.
    public mutating func roll(to t: Double) {
        while t >= windowStart + windowSeconds {
            windows.append(Window(startSeconds: windowStart, frames: framesInWindow, fps: Double(framesInWindow) / windowSeconds, label: label))
            windowStart += windowSeconds
            framesInWindow = 0
        }
    }

    /// Keeps only the latest samples (a long run's per-frame lists would grow without bound).
    /// Returns how many input-latency samples were dropped from the front.
    @discardableResult
    public mutating func trim(keep n: Int) -> Int {
        if frameTimesMs.count > 2 * n { frameTimesMs.removeFirst(frameTimesMs.count - n) }
        guard inputLatencyMs.count > 2 * n else { return 0 }
        let drop = inputLatencyMs.count - n
        inputLatencyMs.removeFirst(drop)
        return drop
    }

    /// Time since the last frame at `t` (how long the player has been frozen).
    public func frozenFor(at t: Double) -> Double { lastFrameAt.map { t - $0 } ?? 0 }

    public static func percentile(_ xs: [Double], _ p: Double) -> Double {
        guard !xs.isEmpty else { return 0 }
        let s = xs.sorted()
        return s[min(s.count - 1, Int((p / 100 * Double(s.count - 1)).rounded()))]
    }

    /// FPS of the windows that started in [from, to): mean, and range (max − min).
    public func fps(from: Double, to: Double) -> (mean: Double, range: Double, windows: Int) {
        let w = windows.filter { $0.startSeconds >= from && $0.startSeconds < to }.map(\.fps)
        guard let lo = w.min(), let hi = w.max() else { return (0, 0, 0) }
        return (w.reduce(0, +) / Double(w.count), hi - lo, w.count)
    }
}
