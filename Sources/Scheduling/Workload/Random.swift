import Foundation

/// A small, fast, seedable generator (SplitMix64) so traces, the twin, probes and fuzz tests are
/// reproducible.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    public mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) }
    public mutating func exponential(mean: Double) -> Double { -mean * log(1 - uniform()) }
    /// Standard normal (Box–Muller).
    public mutating func normal() -> Double {
        let u1 = max(uniform(), 1e-300), u2 = uniform()
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }
    public mutating func logNormal(median: Double, sigma: Double) -> Double { median * exp(sigma * normal()) }
    public mutating func pick<T>(_ xs: [T]) -> T { xs[Int(uniform() * Double(xs.count)) % xs.count] }
    public mutating func weighted<T>(_ xs: [(T, Double)]) -> T {
        let total = xs.reduce(0) { $0 + $1.1 }
        var u = uniform() * total
        for (x, w) in xs { if u < w { return x }; u -= w }
        return xs.last!.0
    }
}
