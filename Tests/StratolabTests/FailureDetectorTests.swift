@testable import Cluster
import Testing

// The failure detector is pure: it is fed monotonic nanoseconds by hand.

@Suite("Failure detector")
struct FailureDetectorTests {
    @Test("an alive node turns suspect after 1 s of silence and dead after 2 s, one transition each")
    func aliveSuspectDead() {
        var d = FailureDetector()
        d.track("n1", now: 0)
        #expect(d.liveness(of: "n1") == .alive)
        #expect(d.tick(now: .millis(999)).isEmpty)
        let toSuspect = d.tick(now: .millis(1000))
        #expect(toSuspect == [LivenessTransition(nodeID: "n1", from: .alive, to: .suspect, silenceNanos: .millis(1000))])
        #expect(d.tick(now: .millis(1500)).isEmpty)  // still suspect: no new transition
        let toDead = d.tick(now: .millis(2000))
        #expect(toDead == [LivenessTransition(nodeID: "n1", from: .suspect, to: .dead, silenceNanos: .millis(2000))])
        #expect(d.liveness(of: "n1") == .dead)
        #expect(d.tick(now: .millis(10_000)).isEmpty)  // dead is final until tracked again
    }

    @Test("a node silent past the dead timeout in one step goes straight from alive to dead")
    func straightToDead() {
        var d = FailureDetector()
        d.track("n", now: 0)
        #expect(d.tick(now: .millis(2500)).map { [$0.from, $0.to] } == [[.alive, .dead]])
    }

    @Test("a suspect that is heard again is alive, and heard() reports that transition")
    func suspectRevives() {
        var d = FailureDetector()
        d.track("n", now: 0)
        _ = d.tick(now: .millis(1200))
        #expect(d.liveness(of: "n") == .suspect)
        let t = d.heard("n", now: .millis(1300))
        #expect(t == LivenessTransition(nodeID: "n", from: .suspect, to: .alive, silenceNanos: .millis(1300)))
        #expect(d.liveness(of: "n") == .alive)
        #expect(d.lastHeard("n") == .millis(1300))
        // Silence is measured from the last time it was heard.
        #expect(d.tick(now: .millis(2200)).isEmpty)
        #expect(d.tick(now: .millis(2300)).map(\.to) == [.suspect])
    }

    @Test("hearing an alive node reports no transition and keeps it alive")
    func aliveHeard() {
        var d = FailureDetector()
        d.track("n", now: 0)
        #expect(d.heard("n", now: .millis(900)) == nil)
        #expect(d.tick(now: .millis(1800)).isEmpty)
        #expect(d.liveness(of: "n") == .alive)
    }

    @Test("a late, out-of-order heard() never moves the last-heard time backwards")
    func heardOutOfOrder() {
        var d = FailureDetector()
        d.track("n", now: .millis(500))
        d.heard("n", now: .millis(800))
        d.heard("n", now: .millis(600))
        #expect(d.lastHeard("n") == .millis(800))
    }

    @Test("a dead node is not revived by heard(); only track() brings it back")
    func deadStaysDead() {
        var d = FailureDetector()
        d.track("n", now: 0)
        _ = d.tick(now: .millis(3000))
        #expect(d.heard("n", now: .millis(3100)) == nil)
        #expect(d.liveness(of: "n") == .dead)
        #expect(d.tick(now: .millis(3200)).isEmpty)
        d.track("n", now: .millis(4000))
        #expect(d.liveness(of: "n") == .alive)
        #expect(d.tick(now: .millis(4999)).isEmpty)
        #expect(d.tick(now: .millis(5000)).map(\.to) == [.suspect])
    }

    @Test("untracked and forgotten nodes are unknown and never reported")
    func untracked() {
        var d = FailureDetector()
        #expect(d.heard("ghost", now: 0) == nil)
        #expect(d.liveness(of: "ghost") == nil)
        d.track("n", now: 0)
        #expect(d.trackedCount == 1)
        d.forget("n")
        #expect(d.trackedCount == 0)
        #expect(d.liveness(of: "n") == nil && d.lastHeard("n") == nil)
        #expect(d.tick(now: .millis(10_000)).isEmpty)
    }

    @Test("transitions of several nodes in one tick are reported sorted by node id")
    func severalNodes() {
        var d = FailureDetector()
        d.track("c", now: 0)
        d.track("a", now: 0)
        d.track("b", now: .millis(1500))
        let t = d.tick(now: .millis(2100))
        #expect(t.map(\.nodeID) == ["a", "c"])
        #expect(t.allSatisfy { $0.to == .dead })
        #expect(d.liveness(of: "b") == .alive)
    }

    @Test("custom timeouts are honoured")
    func customConfig() {
        let config = FailureDetectorConfig(suspectAfterNanos: .millis(100), deadAfterNanos: .millis(300))
        var d = FailureDetector(config: config)
        #expect(d.config == config)
        d.track("n", now: 0)
        #expect(d.tick(now: .millis(99)).isEmpty)
        #expect(d.tick(now: .millis(100)).map(\.to) == [.suspect])
        #expect(d.tick(now: .millis(299)).isEmpty)
        #expect(d.tick(now: .millis(300)).map(\.to) == [.dead])
    }

    @Test("the state after a silence follows the default timeouts", arguments: [
        (Int64(0), Liveness.alive), (1, .alive), (999, .alive), (1000, .suspect), (1001, .suspect),
        (1999, .suspect), (2000, .dead), (2001, .dead), (60_000, .dead),
    ])
    func silenceTable(silenceMs: Int64, expected: Liveness) {
        var d = FailureDetector()
        d.track("n", now: .millis(10))
        _ = d.tick(now: .millis(10 + silenceMs))
        #expect(d.liveness(of: "n") == expected)
    }

    @Test("liveness maps onto the wire's node states")
    func nodeStates() {
        #expect(Liveness.alive.nodeState == .alive)
        #expect(Liveness.suspect.nodeState == .suspect)
        #expect(Liveness.dead.nodeState == .dead)
    }
}
