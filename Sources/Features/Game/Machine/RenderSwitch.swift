import Foundation

/// Where a player's frames come from: its own device, or a render site (a render agent's node id).
public enum RenderPlace: Hashable, Sendable, CustomStringConvertible {
    case local
    case site(String)
    public var description: String { switch self { case .local: return "local"; case .site(let s): return s } }
    public var siteID: String? { if case .site(let s) = self { return s }; return nil }
    public init(_ s: String) { self = s.isEmpty || s == "local" ? .local : .site(s) }
}

/// One player's switch between renderers, make-before-break: the new renderer is started and must
/// show its first frame before the player changes to it and the old one stops. A warm-up that
/// fails or times out rolls back (the old renderer never stopped); a site that dies while it
/// serves the player forces a fall-back to local rendering (the only renderer that cannot vanish).
///
/// Pure: events in (with the time, seconds), directives out. The player process carries the
/// directives out (subscribe to the world, ask a site to serve, show a stream, stop one).
public struct RenderSwitch: Sendable {
    public enum State: Equatable, Sendable {
        /// Frames come from `current`.
        case steady(RenderPlace)
        /// `target` is warming up while `current` still renders; gives up at `deadline`.
        case warming(current: RenderPlace, target: RenderPlace, since: Double, deadline: Double)
        /// The player left: nothing renders.
        case gone
    }

    public enum Event: Equatable, Sendable {
        /// The policy wants the player at `place`.
        case want(RenderPlace, at: Double)
        /// The first frame from `place` arrived (a local renderer's first frame, or a stream's).
        case firstFrame(RenderPlace, at: Double)
        /// `place` could not serve (refused: no slot; or an error), or stopped answering.
        case failed(RenderPlace, reason: String, at: Double)
        case tick(at: Double)
        case disconnected(at: Double)
    }

    public enum Directive: Equatable, Sendable {
        /// Start rendering at a place: local (subscribe the device to the world) or a site (ask it to serve).
        case start(RenderPlace)
        /// Show frames from here on from this place.
        case show(RenderPlace)
        case stop(RenderPlace)
        /// A switch ended: completed (the new place shows frames) or rolled back (the old one still
        /// does), with why; `forced` when a dead site made the player fall back.
        case completed(from: RenderPlace, to: RenderPlace, startedAt: Double, forced: Bool)
        case rolledBack(from: RenderPlace, target: RenderPlace, reason: String)
    }

    public private(set) var state: State
    /// How long a warm-up may take before it is abandoned (s).
    public let warmupTimeout: Double
    public private(set) var completed = 0, rolledBack = 0, forced = 0

    public init(start: RenderPlace = .local, warmupTimeout: Double = 5) {
        state = .steady(start)
        self.warmupTimeout = warmupTimeout
    }

    /// Where frames are shown from now.
    public var showing: RenderPlace? {
        switch state { case .steady(let p): return p; case .warming(let c, _, _, _): return c; case .gone: return nil }
    }
    public var isSwitching: Bool { if case .warming = state { return true }; return false }

    public mutating func handle(_ event: Event) -> [Directive] {
        switch (state, event) {
        case (.gone, _):
            return []
        case (_, .disconnected):
            let places: [RenderPlace]
            switch state {
            case .steady(let p): places = [p]
            case .warming(let c, let t, _, _): places = [c, t]
            case .gone: places = []
            }
            state = .gone
            return places.map { .stop($0) }

        case (.steady(let current), .want(let target, let at)):
            guard target != current else { return [] }
            state = .warming(current: current, target: target, since: at, deadline: at + warmupTimeout)
            return [.start(target)]
        case (.warming(let current, let target, _, _), .want(let next, let at)):
            if next == target { return [] }
            // The policy changed its mind mid-switch: abandon the warm-up (the current place still renders).
            rolledBack += 1
            var out: [Directive] = [.stop(target), .rolledBack(from: current, target: target, reason: "the policy chose \(next) instead")]
            if next == current { state = .steady(current); return out }
            state = .warming(current: current, target: next, since: at, deadline: at + warmupTimeout)
            out.append(.start(next))
            return out

        case (.warming(let current, let target, let since, _), .firstFrame(let p, _)) where p == target:
            state = .steady(target)
            completed += 1
            return [.show(target), .stop(current), .completed(from: current, to: target, startedAt: since, forced: false)]
        case (.warming(let current, let target, _, _), .failed(let p, let reason, _)) where p == target:
            rolledBack += 1
            state = .steady(current)
            return [.stop(target), .rolledBack(from: current, target: target, reason: reason)]
        case (.warming(let current, let target, _, _), .failed(let p, let reason, let at)) where p == current:
            // The place still rendering died while the new one warms: fall back to local now
            // (unless the target is local, which is starting anyway).
            forced += 1
            if target == .local {
                state = .steady(.local)
                return [.show(.local), .stop(current), .completed(from: current, to: .local, startedAt: at, forced: true)]
            }
            rolledBack += 1
            state = .steady(.local)
            return [.stop(target), .stop(current), .rolledBack(from: current, target: target, reason: "\(current) failed during the switch: \(reason)"),
                    .start(.local), .show(.local), .completed(from: current, to: .local, startedAt: at, forced: true)]
        case (.warming(let current, let target, _, let deadline), .tick(let at)) where at >= deadline:
            rolledBack += 1
            state = .steady(current)
            return [.stop(target), .rolledBack(from: current, target: target, reason: "no first frame from \(target) within \(warmupTimeout) s")]

        case (.steady(let current), .failed(let p, _, let at)) where p == current && current != .local:
            // The site serving the player is gone: render locally at once (break-before-make is
            // forced; the gap is bounded by how fast the failure was noticed).
            forced += 1
            state = .steady(.local)
            return [.start(.local), .show(.local), .stop(current), .completed(from: current, to: .local, startedAt: at, forced: true)]
        default:
            return []
        }
    }
}
