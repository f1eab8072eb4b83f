/// A binary min-heap of timed events; equal times come out in insertion order, so runs are
/// deterministic.
public struct EventQueue<Event> {
    private var heap: [(time: Double, seq: UInt64, event: Event)] = []
    private var seq: UInt64 = 0
    public init() {}
    public var isEmpty: Bool { heap.isEmpty }
    public var count: Int { heap.count }
    public var nextTime: Double? { heap.first?.time }

    public mutating func push(_ time: Double, _ event: Event) {
        seq += 1
        heap.append((time, seq, event))
        var i = heap.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if less(i, p) { heap.swapAt(i, p); i = p } else { break }
        }
    }

    public mutating func pop() -> (time: Double, event: Event)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < heap.count && less(l, m) { m = l }
            if r < heap.count && less(r, m) { m = r }
            if m == i { break }
            heap.swapAt(i, m); i = m
        }
        return (top.time, top.event)
    }

    private func less(_ a: Int, _ b: Int) -> Bool {
        let x = heap[a], y = heap[b]
        return x.time < y.time || (x.time == y.time && x.seq < y.seq)
    }
}
