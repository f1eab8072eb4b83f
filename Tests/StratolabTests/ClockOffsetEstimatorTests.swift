import Cluster
import Testing

// NTP-style offset estimation from (t1, t2, t3, t4) samples in plain nanoseconds.

/// A sample from an agent whose clock is `offset` behind the coordinator's, with one-way delays
/// `up` and `down` and `processing` spent on the coordinator, starting at agent time `t1`.
private func sample(t1: Int64, offset: Int64, up: Int64, down: Int64, processing: Int64 = 0) -> ClockSample {
    let t2 = t1 + up + offset
    let t3 = t2 + processing
    let t4 = t3 - offset + down
    return ClockSample(t1: t1, t2: t2, t3: t3, t4: t4)
}

@Suite("Clock offset estimator")
struct ClockOffsetEstimatorTests {
    @Test("there is no estimate before the first sample")
    func emptyEstimate() {
        let e = ClockOffsetEstimator()
        #expect(e.estimate == nil)
        #expect(e.totalSamples == 0)
        #expect(e.window == 8)
    }

    @Test("with symmetric delays the offset is exact, whatever the coordinator's processing time",
          arguments: [Int64(0), 5_000_000, -7_000_000, 1_700_000_000_000_000_000])
    func symmetricDelayIsExact(offset: Int64) {
        var e = ClockOffsetEstimator()
        let s = sample(t1: 1_000_000, offset: offset, up: 3_000_000, down: 3_000_000, processing: 400_000)
        #expect(s.offset == offset)
        #expect(s.delay == 6_000_000)
        e.add(s)
        #expect(e.estimate?.offsetNanos == offset)
    }

    @Test("the error bound is half the round-trip delay of the sample used")
    func errorBound() {
        var e = ClockOffsetEstimator()
        e.add(sample(t1: 0, offset: 1_000, up: 2_000_000, down: 8_000_000, processing: 50_000))
        let est = e.estimate!
        #expect(est.errorBoundNanos == 5_000_000)
        // Asymmetry shows up as error, and it is within the bound.
        #expect(abs(est.offsetNanos - 1_000) <= est.errorBoundNanos)
        #expect(est.offsetNanos == 1_000 - 3_000_000)
    }

    @Test("of the samples in the window, the one with the smallest delay wins")
    func picksMinimumDelay() {
        var e = ClockOffsetEstimator(window: 4)
        e.add(sample(t1: 0, offset: 100, up: 5_000, down: 9_000))        // delay 14 µs
        e.add(sample(t1: 100_000, offset: 200, up: 1_000, down: 1_000))  // delay 2 µs: the best
        e.add(sample(t1: 200_000, offset: 300, up: 4_000, down: 4_000))  // delay 8 µs
        let est = e.estimate!
        #expect(est.offsetNanos == 200)
        #expect(est.errorBoundNanos == 1_000)
        #expect(est.samples == 3)
    }

    @Test("old samples fall out of the window, even the best one")
    func windowEvicts() {
        var e = ClockOffsetEstimator(window: 2)
        e.add(sample(t1: 0, offset: 11, up: 100, down: 100))             // best, but oldest
        e.add(sample(t1: 10_000, offset: 22, up: 500, down: 500))
        #expect(e.estimate?.offsetNanos == 11)
        e.add(sample(t1: 20_000, offset: 33, up: 300, down: 300))
        #expect(e.estimate?.offsetNanos == 33)
        #expect(e.estimate?.errorBoundNanos == 300)
        #expect(e.totalSamples == 3)
    }

    @Test("samples whose timestamps run backwards are dropped")
    func backwardsDropped() {
        var e = ClockOffsetEstimator()
        e.add(ClockSample(t1: 1_000, t2: 5_000, t3: 6_000, t4: 900))     // agent clock stepped back
        e.add(ClockSample(t1: 1_000, t2: 6_000, t3: 5_000, t4: 3_000))   // coordinator clock stepped back
        #expect(e.estimate == nil)
        #expect(e.totalSamples == 0)
        e.add(sample(t1: 0, offset: 42, up: 10, down: 10))
        #expect(e.estimate?.offsetNanos == 42)
        #expect(e.estimate?.samples == 1)
    }

    @Test("a negative apparent delay counts as zero")
    func delayNeverNegative() {
        // Coordinator processing longer than the round trip (impossible, but clocks lie).
        let s = ClockSample(t1: 0, t2: 0, t3: 5_000, t4: 1_000)
        #expect(s.delay == 0)
    }

    @Test("reset forgets the samples")
    func resetForgets() {
        var e = ClockOffsetEstimator()
        e.add(sample(t1: 0, offset: 1, up: 1, down: 1))
        e.reset()
        #expect(e.estimate == nil)
    }
}
