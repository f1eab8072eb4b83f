import Cluster
import MemoryAgent
import Protocol
import Scheduling
import Testing

// The GPU catalogue, size and tier parsing, latency percentiles and the timer heap.

@Suite("GPU catalogue")
struct GPUCatalogTests {
    @Test("models are found by name, ignoring case, underscores and the usual aliases", arguments: [
        ("a100_80gb", "A100-80GB"), ("A100-80G", "A100-80GB"), ("A100", "A100-80GB"), ("a100", "A100-80GB"),
        ("h100", "H100"), ("H100-SXM", "H100"), ("h100-80gb", "H100"), ("V100-16GB", "V100"), ("v100_32g", "V100-32GB"),
        ("A100-40GB", "A100-40GB"), ("l40s", "L40S"), ("H200", "H200"),
    ])
    func aliases(name: String, expected: String) {
        #expect(GPUCatalog.model(named: name)?.name == expected)
    }

    @Test("unknown names are not found", arguments: ["", "Z9000", "A100-120GB", "H100X", "gpu"])
    func unknown(name: String) {
        #expect(GPUCatalog.model(named: name) == nil)
    }

    @Test("the catalogue spans several memory sizes and every entry is self-consistent")
    func entries() {
        #expect(Set(GPUCatalog.models.map(\.memoryGiB)).count >= 3)
        #expect(Set(GPUCatalog.names).count == GPUCatalog.models.count)
        for m in GPUCatalog.models {
            #expect(m.memoryGiB > 0 && m.memoryBandwidthGBps > 0 && m.fp16TFLOPS > 0 && m.interconnectGBps > 0, "\(m.name)")
            #expect(!m.source.isEmpty, "\(m.name)")
            #expect(GPUCatalog.model(named: m.name) == m, "\(m.name) is found by its own name")
        }
        #expect(GPUCatalog.model(named: "A100-80GB")?.memoryBytes == 80 << 30)
    }

    @Test("capabilities describe the model, and a PCIe-attached NVLink part gets PCIe bandwidth")
    func capabilities() {
        let a100 = GPUCatalog.model(named: "A100-80GB")!
        let caps = GPUCatalog.capabilities(for: a100, count: 4)
        #expect(caps.model == "A100-80GB" && caps.count == 4)
        #expect(caps.memoryBytesPerGpu == 80 << 30)
        #expect(caps.memoryBandwidthGbps == 2039 && caps.fp16Tflops == 312)
        #expect(caps.interconnect == .nvlink && caps.interconnectGbps == 600)
        #expect(caps.emulated && caps.source == a100.source)
        let pcie = GPUCatalog.capabilities(for: a100, count: 1, interconnect: .pcie)
        #expect(pcie.interconnect == .pcie && pcie.interconnectGbps == 32)
    }
}

@Suite("Sizes and tier specs")
struct SizeParsingTests {
    @Test("sizes parse in binary and decimal units, with or without a unit", arguments: [
        ("4GiB", UInt64(4) << 30), ("512MiB", 512 << 20), ("1.5GB", 1_500_000_000), ("123", 123), ("0", 0),
        ("1TiB", 1 << 40), ("2KiB", 2048), ("3KB", 3000), ("7MB", 7_000_000), ("2TB", 2_000_000_000_000),
        ("10B", 10), (" 8 GiB ", 8 << 30), ("0.5KiB", 512),
    ])
    func parseGood(text: String, bytes: UInt64) {
        #expect(ByteSize.parse(text) == bytes)
    }

    @Test("nonsense sizes do not parse", arguments: [
        "", "four", "GiB", "-1", "-1GiB", "4 gigs", "1.2.3MiB", "nanGiB", "infGiB", "4XB", "99999999999999999999",
        "1e30GiB", "20000000TiB", "18446744073709551616B",
    ])
    func parseBad(text: String) {
        #expect(ByteSize.parse(text) == nil)
    }

    @Test("sizes format in binary units", arguments: [
        (UInt64(0), "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (512 << 20, "512 MiB"),
        (4 << 30, "4.0 GiB"), (1 << 40, "1.0 TiB"), (1 << 50, "1.0 PiB"), (2048 << 50, "2048 PiB"),
    ])
    func format(bytes: UInt64, text: String) {
        #expect(ByteSize.format(bytes) == text)
    }

    @Test("tier specs parse kind, capacity and an optional path")
    func tierGood() throws {
        #expect(try MemoryHost.TierSpec.parse("dram:4GiB") == .init(kind: .dram, capacityBytes: 4 << 30))
        #expect(try MemoryHost.TierSpec.parse("CXL:8GiB") == .init(kind: .cxl, capacityBytes: 8 << 30))
        #expect(try MemoryHost.TierSpec.parse("nvme:16GiB:/var/lib/strato/nvme")
                == .init(kind: .nvme, capacityBytes: 16 << 30, path: "/var/lib/strato/nvme"))
        #expect(try MemoryHost.TierSpec.parse("nvme:1GiB:/mnt/a:b").path == "/mnt/a:b")
    }

    @Test("bad tier specs are refused with an error that quotes them", arguments: [
        "", "dram", "dram:", "flash:1GiB", "dram:0", "dram:0GiB", "dram:lots", ":4GiB", "dram:-1GiB",
    ])
    func tierBad(text: String) {
        #expect(throws: MemoryHost.SpecError.self) { try MemoryHost.TierSpec.parse(text) }
        do {
            _ = try MemoryHost.TierSpec.parse(text)
        } catch {
            #expect("\(error)".contains("'\(text)'"))
        }
    }
}

@Suite("Latency window")
struct LatencyWindowTests {
    @Test("percentiles of 1…100, linear between ranks (the project's one definition), rounded to nanoseconds", arguments: [
        (0.0, Int64(1)), (1, 2), (50, 51), (90, 90), (99, 99), (99.5, 100), (100, 100),
    ])
    func percentiles(p: Double, expected: Int64) {
        var w = LatencyWindow(capacity: 1000)
        for v in (1...100).reversed() { w.record(Int64(v)) }
        #expect(w.count == 100 && w.total == 100)
        #expect(w.percentile(p) == expected)
    }

    @Test("an empty window reports 0, a single sample is every percentile")
    func edges() {
        var w = LatencyWindow(capacity: 4)
        #expect(w.percentile(50) == 0)
        w.record(7)
        #expect(w.percentile(0) == 7 && w.percentile(50) == 7 && w.percentile(100) == 7)
        // The project's one percentile: linear between ranks.
        for x in [40, 10, 30, 20] as [Int64] { w.record(x) }
        #expect(w.percentile(0) == 10 && w.percentile(100) == 40)
        #expect(w.percentile(50) == 25 && w.percentile(75) == 33)
        #expect(percentile([1, 2, 3, 4], 50) == 2.5)
    }

    @Test("the window keeps only the most recent samples")
    func ring() {
        var w = LatencyWindow(capacity: 4)
        for v in Int64(1)...6 { w.record(v * 10) }
        #expect(w.count == 4 && w.total == 6)
        #expect(w.percentile(0) == 30)
        #expect(w.percentile(100) == 60)
        #expect(w.percentile(50) == 45)
    }
}

@Suite("Timer heap")
struct TimerHeapTests {
    @Test("timers pop earliest first, and only once due")
    func order() {
        var h = TimerHeap()
        #expect(h.isEmpty && h.nextDue == nil)
        let dues: [Int: Int64] = [1: 50, 2: 10, 3: 40, 4: 20, 5: 30, 6: 60, 7: 5]
        for (key, due) in dues.sorted(by: { $0.key < $1.key }) { h.schedule(key, at: due) }
        #expect(h.nextDue == 5)
        #expect(h.popDue(now: 4).isEmpty)
        #expect(h.popDue(now: 30) == [7, 2, 4, 5])
        #expect(h.nextDue == 40)
        #expect(h.popDue(now: 1000) == [3, 1, 6])
        #expect(h.isEmpty)
        #expect(h.popDue(now: 2000).isEmpty)
    }

    @Test("a rescheduled key fires once, at its new time, whether moved later or earlier")
    func reschedule() {
        var h = TimerHeap()
        h.schedule(1, at: 10)
        h.schedule(2, at: 20)
        h.schedule(1, at: 30)   // later
        h.schedule(2, at: 5)    // earlier
        #expect(h.popDue(now: 5) == [2])
        #expect(h.popDue(now: 10).isEmpty)
        #expect(h.popDue(now: 25).isEmpty)
        #expect(h.popDue(now: 30) == [1])
        #expect(h.popDue(now: 100).isEmpty)
        #expect(h.isEmpty)
    }

    @Test("a key can be scheduled again after it fired, and many keys pop in due order")
    func manyKeys() {
        var h = TimerHeap()
        h.schedule(9, at: 1)
        #expect(h.popDue(now: 1) == [9])
        h.schedule(9, at: 2)
        #expect(h.popDue(now: 2) == [9])

        var rng = SplitMix64(seed: 7)
        var due: [Int: Int64] = [:]
        for key in 0..<500 {
            due[key] = Int64(rng.next() % 10_000)
            h.schedule(key, at: due[key]!)
        }
        for key in stride(from: 0, to: 500, by: 5) {   // move every fifth key
            due[key] = Int64(rng.next() % 10_000)
            h.schedule(key, at: due[key]!)
        }
        var popped: [Int] = []
        for now in stride(from: Int64(0), through: 10_000, by: 100) { popped += h.popDue(now: now) }
        #expect(popped.count == 500)
        #expect(Set(popped).count == 500)
        let times = popped.map { due[$0]! }
        #expect(times == times.sorted())
    }
}
