import Cluster
import Foundation
import Protocol
import Scheduling
import Wire

/// Sends generated inference requests to the coordinator when they arrive, on the coordinator's
/// trace clock, from a thread of its own with its own connection. A request goes out 1 ms (wall)
/// after its arrival, so the coordinator never holds it back for being early; that millisecond and
/// the transit count in its latency. A batch the coordinator does not answer (it crashed) is sent
/// again with whatever arrived meanwhile; ids make repeats harmless.
final class RequestDriver: @unchecked Sendable {
    struct Progress { var sent = 0, accepted = 0, duplicates = 0; var rejected: [String] = []; var finished = false; var failures = 0 }

    private let requests: [ServiceRequest]
    private let client: OperatorClient
    private let timeScale: Double
    /// Local wall nanoseconds at trace second 0.
    private let t0Wall: Int64
    private let lock = NSLock()
    private var progress = Progress()
    private var stopRequested = false
    private var thread: Thread?
    static let marginNanos: Int64 = 1_000_000
    static let maxBatch = 2000

    init(requests: [ServiceRequest], client: OperatorClient, timeScale: Double, t0Wall: Int64) {
        self.requests = requests
        self.client = client
        self.timeScale = timeScale
        self.t0Wall = t0Wall
    }

    var snapshot: Progress { lock.lock(); defer { lock.unlock() }; return progress }

    /// Starts a driver for `requests` against the coordinator `client` talks to, on a connection of
    /// its own; trace second 0 on this host's clock comes from the coordinator's own trace time.
    static func start(_ requests: [ServiceRequest], via client: OperatorClient) throws -> RequestDriver {
        let before = SystemClock.shared.wallNanos()
        let j = try client.jobs(timeoutMs: 3000)
        let after = SystemClock.shared.wallNanos()
        // The driver's own key (role driver: it may submit and read, nothing else) where the key directory has one.
        let driverKey = client.keysDirectory.map { KeyDirectory(path: $0).file("driver.key") }.flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil }
        let d = RequestDriver(requests: requests, client: try OperatorClient(endpoint: client.endpoint, keysDirectory: client.keysDirectory, keyFile: driverKey, name: "request-driver"),
                              timeScale: j.timeScale, t0Wall: (before + after) / 2 - Int64(j.traceNow / j.timeScale * 1e9))
        d.start()
        return d
    }

    /// Everything is sent and the coordinator has answered every request it accepted.
    func allAnswered(_ r: RequestsReply?) -> Bool {
        let p = snapshot
        guard p.finished, let r else { return false }
        return r.services.reduce(0) { $0 + $1.outstanding } == 0 && r.services.reduce(0) { $0 + Int($1.submitted) } >= p.accepted
    }

    func start() {
        let t = Thread { [self] in self.run() }
        t.name = "request-driver"
        thread = t
        t.start()
    }

    /// Stops sending (what was not sent by then counts as generated, not accepted) and waits.
    func stop() {
        lock.lock(); stopRequested = true; lock.unlock()
        while thread != nil && !snapshot.finished { Thread.sleep(forTimeInterval: 0.01) }
        client.close()
    }

    private var shouldStop: Bool { lock.lock(); defer { lock.unlock() }; return stopRequested }

    private func wall(ofArrival t: Double) -> Int64 { TraceClock(zeroWall: t0Wall, timeScale: timeScale).wall(trace: t) + RequestDriver.marginNanos }

    private func run() {
        var next = 0
        while next < requests.count && !shouldStop {
            let now = SystemClock.shared.wallNanos()
            var end = next
            while end < requests.count && end - next < RequestDriver.maxBatch && wall(ofArrival: requests[end].arrival) <= now { end += 1 }
            if end == next {
                let wait = min(wall(ofArrival: requests[next].arrival) - now, 50_000_000)
                if wait > 0 { Thread.sleep(forTimeInterval: Double(wait) / 1e9) }
                continue
            }
            let batch = requests[next..<end].map(\.message)
            do {
                let r = try client.submit(requests: batch, timeoutMs: 1000)
                lock.lock()
                progress.sent = end
                progress.accepted += Int(r.accepted) + Int(r.duplicates)
                progress.duplicates += Int(r.duplicates)
                progress.rejected += r.rejected
                lock.unlock()
                next = end
            } catch {
                lock.lock(); progress.failures += 1; lock.unlock()
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
        lock.lock(); progress.finished = true; lock.unlock()
    }
}
