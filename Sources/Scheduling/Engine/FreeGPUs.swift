/// Free GPUs per node, indexed so "the best-fitting node of model M with at least N free GPUs" is
/// cheap at 10,000 nodes: per model, per free count, the node indices in ascending order.
public struct FreeGPUs: Sendable {
    public private(set) var nodeIDs: [String]
    public private(set) var nodeModels: [String]
    public private(set) var free: [Int]
    public private(set) var capacity: [Int]
    private var index: [String: Int] = [:]
    private var buckets: [String: [[Int]]] = [:]   // model → free count → sorted node indices
    public private(set) var totalFree = 0
    public private(set) var freeByModel: [String: Int] = [:]

    public init(nodes: [(id: String, model: String, capacity: Int, free: Int)]) {
        nodeIDs = nodes.map(\.id); nodeModels = nodes.map(\.model); free = nodes.map(\.free); capacity = nodes.map(\.capacity)
        for (i, n) in nodes.enumerated() {
            index[n.id] = i
            var b = buckets[n.model] ?? []
            while b.count <= n.capacity { b.append([]) }
            b[n.free].append(i)
            buckets[n.model] = b
            totalFree += n.free
            freeByModel[n.model, default: 0] += n.free
        }
        models = buckets.keys.sorted()
    }

    public private(set) var models: [String] = []

    public func maxCapacity(model: String) -> Int { (buckets[model]?.count ?? 1) - 1 }

    public func freeOn(_ node: String) -> Int { index[node].map { free[$0] } ?? 0 }
    public func model(of node: String) -> String? { index[node].map { nodeModels[$0] } }

    /// The node of `model` whose free count is the smallest that is ≥ `count` (best fit), lowest index first.
    public func bestNode(model: String, count: Int) -> String? {
        guard count >= 1, let b = buckets[model], count < b.count else { return nil }
        for f in count..<b.count { if let i = b[f].first { return nodeIDs[i] } }
        return nil
    }

    /// The largest free count on any node of `model`.
    public func largestFree(model: String) -> Int {
        guard let b = buckets[model] else { return 0 }
        for f in stride(from: b.count - 1, through: 1, by: -1) where !b[f].isEmpty { return f }
        return 0
    }

    public mutating func take(_ node: String, _ count: Int) { adjust(node, by: -count) }
    public mutating func give(_ node: String, _ count: Int) { adjust(node, by: count) }

    private mutating func adjust(_ node: String, by delta: Int) {
        guard let i = index[node] else { return }
        let model = nodeModels[i]
        let old = free[i], new = old + delta
        precondition(new >= 0 && new <= capacity[i], "free GPUs on \(node) would be \(new) of \(capacity[i])")
        remove(i, from: &buckets[model]![old])
        insert(i, into: &buckets[model]![new])
        free[i] = new
        totalFree += delta
        freeByModel[model, default: 0] += delta
    }

    private func position(_ x: Int, in a: [Int]) -> Int {
        var lo = 0, hi = a.count
        while lo < hi { let m = (lo + hi) / 2; if a[m] < x { lo = m + 1 } else { hi = m } }
        return lo
    }
    private func insert(_ x: Int, into a: inout [Int]) { a.insert(x, at: position(x, in: a)) }
    private func remove(_ x: Int, from a: inout [Int]) {
        let p = position(x, in: a)
        if p < a.count && a[p] == x { a.remove(at: p) }
    }
}
