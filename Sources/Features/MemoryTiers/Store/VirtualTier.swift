import Foundation

/// A tier that keeps only the sizes of its blocks: the digital twin's memory host runs the same
/// `TieredBlockStore` (capacity, eviction, demotion, promotion) on virtual time without holding
/// bytes. Reads hand back zeros of the stored size.
public final class VirtualTier: TierBackend {
    public let kind: TierKind
    public var label: String { "\(kind.rawValue) (modelled by the twin: sizes only)" }
    public var emulated: Bool { true }
    private var sizes: [String: Int] = [:]
    public init(_ kind: TierKind) { self.kind = kind }
    public func write(_ key: String, _ bytes: UnsafeRawBufferPointer) throws { sizes[key] = bytes.count }
    public func read(_ key: String) throws -> [UInt8] {
        guard let n = sizes[key] else { throw BlockStoreError(.unknownKey, "no block \(key) in the modelled \(kind.rawValue) tier") }
        return [UInt8](repeating: 0, count: n)
    }
    public func remove(_ key: String) { sizes[key] = nil }
}
