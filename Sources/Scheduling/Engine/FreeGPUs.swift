/// Free GPUs per alive node, indexed so "the best-fitting node of model M with at least N free
/// GPUs" is cheap at 10,000 nodes: per model, per free count, the node ids in ascending order.
///
/// Every change is incremental (`upsert`, `remove`, `take`, `give`: a binary search and an insert
/// into one bucket), so a node joining, dying or coming back costs O(log N) comparisons rather than
/// a rebuild over all nodes (which made registration storms quadratic at 5,000 nodes).
public struct FreeGPUs: Sendable {
    private struct Entry: Sendable { var model: String; var capacity: Int; var free: Int }
    private var entries: [String: Entry] = [:]
    /// model → free count → sorted node ids (alive nodes only).
    private var buckets: [String: [[String]]] = [:]
    private var nodesByModel: [String: Int] = [:]
    public private(set) var totalFree = 0
    public private(set) var freeByModel: [String: Int] = [:]
    /// Models with at least one alive node, sorted.
    public private(set) var models: [String] = []

    public init(nodes: [(id: String, model: String, capacity: Int, free: Int)] = []) {
        for n in nodes { upsert(n.id, model: n.model, capacity: n.capacity, free: n.free) }
    }

    public var nodeCount: Int { entries.count }
    public func freeOn(_ node: String) -> Int { entries[node]?.free ?? 0 }
    public func model(of node: String) -> String? { entries[node]?.model }

    /// The node of `model` whose free count is the smallest that is ≥ `count` (best fit), lowest id first.
    public func bestNode(model: String, count: Int) -> String? {
        guard count >= 1, let b = buckets[model], count < b.count else { return nil }
        for f in count..<b.count { if let id = b[f].first { return id } }
        return nil
    }

    /// The largest free count on any node of `model`.
    public func largestFree(model: String) -> Int {
        guard let b = buckets[model] else { return 0 }
        for f in stride(from: b.count - 1, through: 1, by: -1) where !b[f].isEmpty { return f }
        return 0
    }

    /// Adds an alive node, or replaces what is known of it.
    public mutating func upsert(_ id: String, model: String, capacity: Int, free: Int) {
        precondition(free >= 0 && free <= capacity, "free GPUs on \(id) would be \(free) of \(capacity)")
        remove(id)
        entries[id] = Entry(model: model, capacity: capacity, free: free)
        var b = buckets[model] ?? []
        while b.count <= capacity { b.append([]) }
        FreeGPUs.insert(id, into: &b[free])
        buckets[model] = b
        totalFree += free
        freeByModel[model, default: 0] += free
        nodesByModel[model, default: 0] += 1
        if nodesByModel[model] == 1 { models.insert(model, at: FreeGPUs.position(model, in: models)) }
    }

    /// Forgets a node (it died): its GPUs are no longer free anywhere.
    public mutating func remove(_ id: String) {
        guard let e = entries.removeValue(forKey: id) else { return }
        FreeGPUs.remove(id, from: &buckets[e.model]![e.free])
        totalFree -= e.free
        freeByModel[e.model, default: 0] -= e.free
        nodesByModel[e.model, default: 0] -= 1
        if nodesByModel[e.model] == 0 {
            nodesByModel[e.model] = nil
            buckets[e.model] = nil
            freeByModel[e.model] = nil
            models.removeAll { $0 == e.model }
        }
    }

    public mutating func take(_ node: String, _ count: Int) { adjust(node, by: -count) }
    public mutating func give(_ node: String, _ count: Int) { adjust(node, by: count) }

    private mutating func adjust(_ node: String, by delta: Int) {
        guard var e = entries[node], delta != 0 else { return }
        let old = e.free, new = old + delta
        precondition(new >= 0 && new <= e.capacity, "free GPUs on \(node) would be \(new) of \(e.capacity)")
        FreeGPUs.remove(node, from: &buckets[e.model]![old])
        FreeGPUs.insert(node, into: &buckets[e.model]![new])
        e.free = new
        entries[node] = e
        totalFree += delta
        freeByModel[e.model, default: 0] += delta
    }

    static func position<T: Comparable>(_ x: T, in a: [T]) -> Int {
        var lo = 0, hi = a.count
        while lo < hi { let m = (lo + hi) / 2; if a[m] < x { lo = m + 1 } else { hi = m } }
        return lo
    }
    private static func insert(_ x: String, into a: inout [String]) { a.insert(x, at: position(x, in: a)) }
    private static func remove(_ x: String, from a: inout [String]) {
        let p = position(x, in: a)
        if p < a.count && a[p] == x { a.remove(at: p) }
    }
}
