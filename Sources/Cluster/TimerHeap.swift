/// A binary min-heap of (due time, key) timers with lazy cancellation: each key holds one live
/// timer, and rescheduling a key makes its older entries stale. Lets one thread drive thousands of
/// virtual nodes without scanning them all every loop.
public struct TimerHeap: Sendable {
    private var heap: [(due: Int64, key: Int, generation: UInt64)] = []
    private var generations: [Int: UInt64] = [:]

    public init() {}

    public var isEmpty: Bool { heap.isEmpty }
    public var nextDue: Int64? { heap.first?.due }

    /// Sets (or replaces) the timer of `key`.
    public mutating func schedule(_ key: Int, at due: Int64) {
        let g = (generations[key] ?? 0) &+ 1
        generations[key] = g
        heap.append((due, key, g))
        siftUp(heap.count - 1)
    }

    /// Removes and returns the keys whose timers are due at `now`, earliest first.
    public mutating func popDue(now: Int64) -> [Int] {
        var out: [Int] = []
        while let top = heap.first, top.due <= now {
            let last = heap.removeLast()
            if !heap.isEmpty { heap[0] = last; siftDown(0) }
            if generations[top.key] == top.generation { out.append(top.key); generations[top.key] = top.generation &+ 1 }
        }
        return out
    }

    private mutating func siftUp(_ i: Int) {
        var child = i
        while child > 0 {
            let parent = (child - 1) / 2
            if heap[child].due >= heap[parent].due { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    private mutating func siftDown(_ i: Int) {
        var parent = i
        while true {
            let l = 2 * parent + 1, r = l + 1
            var smallest = parent
            if l < heap.count && heap[l].due < heap[smallest].due { smallest = l }
            if r < heap.count && heap[r].due < heap[smallest].due { smallest = r }
            if smallest == parent { return }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
