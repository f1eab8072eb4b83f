import Cluster
import Protocol
import Scheduling

/// A render site (edge or cloud) hosting remote renderers of the virtual world for players.
public final class RenderSite: AgentBehavior {
    public let siteKind: SiteKind
    public let slots: UInt32
    public let gpuModel: String
    public let maxFPS: UInt32
    /// The node's features (the game's render handler when the site has a data plane).
    public var handlers: [FeatureHandler] = []
    /// Render slots in use, from the handler that serves players.
    public var slotsUsed: () -> Int = { 0 }

    public enum ConfigError: Error, CustomStringConvertible {
        case badSiteKind(String), badSlots(Int), unknownGPU(String)
        public var description: String {
            switch self {
            case .badSiteKind(let s): return "render site kind '\(s)' must be 'edge' or 'cloud'"
            case .badSlots(let n): return "render slots \(n) must be between 1 and 4096"
            case .unknownGPU(let g): return "unknown GPU model '\(g)' for rendering; known: \(GPUCatalog.names.joined(separator: ", "))"
            }
        }
    }

    public init(siteKind: SiteKind, slots: Int, gpuModel: String, maxFPS: Int = 60) throws {
        guard siteKind == .edge || siteKind == .cloud else { throw ConfigError.badSiteKind(siteKind.name) }
        guard (1...4096).contains(slots) else { throw ConfigError.badSlots(slots) }
        guard GPUCatalog.model(named: gpuModel) != nil else { throw ConfigError.unknownGPU(gpuModel) }
        self.siteKind = siteKind
        self.slots = UInt32(slots)
        self.gpuModel = GPUCatalog.model(named: gpuModel)!.name
        self.maxFPS = UInt32(maxFPS)
    }

    public var kind: NodeKind { .render }

    public func capabilities() -> Capabilities {
        var r = RenderCapabilities()
        r.siteKind = siteKind
        r.renderSlots = slots
        r.gpuModel = gpuModel
        r.maxFps = maxFPS
        var c = Capabilities()
        c.render = r
        return c
    }

    public func fillTelemetry(_ telemetry: inout Telemetry) {
        telemetry.renderSlotsUsed = UInt32(slotsUsed())
    }

    public func running() -> [String] { [] }

    public func execute(_ command: Command) -> (ok: Bool, detail: String)? { nil }
}
