import DataPlane
import Foundation
import Logging
import Protocol
import SwiftProtobuf

public typealias PeerEndpoint = Stratolab_V1_PeerEndpoint
public typealias RenderPlacement = Stratolab_V1_RenderPlacement
public typealias GameCommand = Stratolab_V1_GameCommand
public typealias GameSubscribe = Stratolab_V1_GameSubscribe
public typealias GameInput = Stratolab_V1_GameInput
public typealias GameUpdate = Stratolab_V1_GameUpdate
public typealias ServeRequest = Stratolab_V1_ServeRequest
public typealias ServeReply = Stratolab_V1_ServeReply
public typealias GameFrame = Stratolab_V1_GameFrame
public typealias SwitchRecord = Stratolab_V1_SwitchRecord
public typealias FpsWindows = Stratolab_V1_FpsWindows
public typealias PlayerReport = Stratolab_V1_PlayerReport
public typealias RenderSiteReport = Stratolab_V1_RenderSiteReport
public typealias WorldReport = Stratolab_V1_WorldReport
public typealias GameApiRequest = Stratolab_V1_GameApiRequest
public typealias PlayerRow = Stratolab_V1_PlayerRow
public typealias PlayerWindows = Stratolab_V1_PlayerWindows
public typealias SiteRow = Stratolab_V1_SiteRow
public typealias GameApiReply = Stratolab_V1_GameApiReply

/// Feature "game" on the wire: the stream kinds (see game.proto) and small helpers shared by the
/// world server, render sites and players.
public enum GameWire {
    public static let feature = "game"
    public static let subscribe = "game-subscribe", update = "game-update", input = "game-input"
    public static let serve = "game-serve", serveReply = "game-serve-reply", frame = "game-frame"

    /// Bytes of a payload that stands for real content (chunk data, an encoded frame): a pattern
    /// from a seed, so a receiver could check it and nothing compresses it away.
    public static func payload(_ n: Int, seed: UInt64) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        var x = seed | 1
        var i = 0
        while i < n {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            withUnsafeBytes(of: x.littleEndian) { b in
                for j in 0..<min(8, n - i) { out[i + j] = b[j] }
            }
            i += 8
        }
        return out
    }

    public static func post(_ plane: DataPlane, to peer: PeerEndpoint, kind: String, _ header: some SwiftProtobuf.Message, payload: [UInt8] = []) -> Bool {
        guard !peer.endpoint.isEmpty, let h: [UInt8] = try? header.serializedBytes() else { return false }
        do { try plane.post(to: peer.address, kind: kind, header: h, payload: payload); return true } catch { return false }
    }

    public static func endpoint(node: String, _ plane: DataPlane) -> PeerEndpoint {
        var e = PeerEndpoint(); e.node = node; e.endpoint = plane.endpoint; e.publicKey = plane.publicKey ?? ""
        return e
    }
}

extension PeerEndpoint {
    public var address: PeerAddress { PeerAddress(endpoint: endpoint, publicKey: publicKey.isEmpty ? nil : publicKey) }
}

extension GameUpdate {
    public var view: PlayerView {
        PlayerView(tick: tick, x: x, z: z, visibleChunks: Int(visibleChunks), visibleEntities: Int(visibleEntities), complexity: complexity,
                   newChunks: Int(newChunks), editsInView: Int(editsInView), lastInputSequence: lastInputSequence, lastInputSentNanos: lastInputSentUnixNanos)
    }
    public init(player: String, _ v: PlayerView) {
        self.init()
        self.player = player; tick = v.tick; x = v.x; z = v.z
        visibleChunks = UInt32(v.visibleChunks); visibleEntities = UInt32(v.visibleEntities); complexity = v.complexity
        newChunks = UInt32(v.newChunks); editsInView = UInt32(v.editsInView)
        lastInputSequence = v.lastInputSequence; lastInputSentUnixNanos = v.lastInputSentNanos
    }
}

/// Problems a game handler met (malformed messages, unreachable peers, …), counted by kind and
/// logged: the first five of a kind, then every thousandth.
struct GameProblems {
    let prefix: String
    private(set) var counts: [String: Int] = [:]
    init(_ prefix: String) { self.prefix = prefix }
    mutating func record(_ kind: String, _ message: String, _ logger: Logger) {
        counts[kind, default: 0] += 1
        let n = counts[kind]!
        if n <= 5 || n % 1000 == 0 { logger.warning("\(prefix): \(message)", metadata: ["kind": "\(kind)", "count": "\(n)"]) }
    }
    var malformed: Int { counts.filter { $0.key.hasPrefix("malformed") }.values.reduce(0, +) }
}
