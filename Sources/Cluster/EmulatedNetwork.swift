import Foundation
import Logging
import Wire

/// The emulated network between an agent process and the coordinator: one `LinkEmulator` per
/// direction, fed by `AgentSession` where envelopes go out and frames come in, pumped from its run
/// loop. An agent with no conditions and no control file has none of this (`make` gives nil) and
/// sends and receives exactly as before.
///
/// The control file (JSON of `NetworkConditions`) is looked at no more than every 100 ms and read
/// again when its modification time, size or inode changes; while it exists it replaces the
/// configured conditions, and once it is gone they apply again. A malformed file is reported once
/// and ignored (the conditions in force stay); an empty one is taken as not written yet.
///
/// **Ownership:** used only on the thread running `AgentSession.run()`.
final class EmulatedNetwork {
    static let controlCheckIntervalNanos: Int64 = .millis(100)

    let configured: NetworkConditions
    let controlFile: String?
    private(set) var current: NetworkConditions {
        didSet { passThrough = current.isNone }
    }
    /// No conditions in force: messages skip the emulated link unless some are still queued on it
    /// (so an agent that only has a control file costs next to nothing until it is used).
    private var passThrough: Bool
    private var outgoing: LinkEmulator<[UInt8]>
    private var incoming: LinkEmulator<[[UInt8]]>
    private let clock: Clock
    private let logger: Logger
    private var control: NetworkControlFile
    /// Released messages the socket would not take (no connection, queue full).
    private(set) var sendFailures: UInt64 = 0

    static func make(config: AgentSessionConfig, clock: Clock, logger: Logger) -> EmulatedNetwork? {
        guard !config.network.isNone || config.networkControlFile != nil else { return nil }
        return EmulatedNetwork(configured: config.network, controlFile: config.networkControlFile, clock: clock,
                               logger: logger, seed: UInt64.random(in: 0...UInt64.max))
    }

    init(configured: NetworkConditions, controlFile: String?, clock: Clock, logger: Logger, seed: UInt64) {
        self.configured = configured
        self.controlFile = controlFile
        self.current = configured
        self.passThrough = configured.isNone
        self.clock = clock
        self.logger = logger
        self.control = NetworkControlFile(path: controlFile, configured: configured)
        outgoing = LinkEmulator(conditions: configured, seed: seed)
        incoming = LinkEmulator(conditions: configured, seed: seed ^ 0x1F_0E_2D_3C_4B_5A_6978)
        logger.info("emulating the network to the coordinator (each direction)", metadata: [
            "conditions": "\(configured)", "control_file": "\(controlFile ?? "-")"])
    }

    var outgoingStats: LinkEmulator<[UInt8]>.Stats { outgoing.stats }
    var incomingStats: LinkEmulator<[[UInt8]]>.Stats { incoming.stats }

    /// An encoded envelope on its way out: queued on the emulated link (or lost there), and sent at
    /// once when it is already due. True: the link took it (or, with no conditions, the socket did).
    func send(_ frame: [UInt8], _ dealer: ZMQSocket) -> Bool {
        if passThrough && outgoing.isEmpty { return (try? dealer.send([frame], dontWait: true)) == true }
        let now = clock.monotonicNanos()
        outgoing.offer(frame, bytes: frame.count, at: now)
        releaseOutgoing(now: now, dealer)
        return true
    }

    /// Frames read from the socket: true when the emulated link took them, to hand them over from
    /// `pump` when due; false when no conditions are in force and the caller should handle them now.
    func takesIncoming(_ frames: [[UInt8]]) -> Bool {
        if passThrough && incoming.isEmpty { return false }
        var bytes = 0
        for f in frames { bytes += f.count }
        incoming.offer(frames, bytes: bytes, at: clock.monotonicNanos())
        return true
    }

    /// Called on every turn of the run loop: follows the control file, sends what is due, and
    /// hands what has arrived to `deliver`.
    func pump(_ dealer: ZMQSocket, deliver: ([[UInt8]]) -> Void) {
        let now = clock.monotonicNanos()
        followControlFile(now: now)
        releaseOutgoing(now: now, dealer)
        incoming.releaseDue(at: now, deliver)
    }

    /// The run loop's poll timeout: no later than the next message due in either direction.
    func pollTimeoutMs(_ wait: Int64, now: Int64) -> Int {
        var next = outgoing.nextDue
        if let i = incoming.nextDue { next = min(next ?? i, i) }
        guard let due = next else { return Int(wait) }
        if due <= now { return 0 }
        return Int(min(wait, (due - now + 999_999) / 1_000_000))
    }

    /// At shutdown: lets what is queued outwards (deregistrations) go out when due, waiting at
    /// most a second in all, and logs what the emulated link did.
    func finish(_ dealer: ZMQSocket) {
        var waited: Int64 = 0
        while let next = outgoing.nextDue {
            let now = clock.monotonicNanos()
            if next > now {
                if waited + (next - now) > .millis(1000) { break }
                usleep(UInt32(min(Int64(UInt32.max), (next - now) / 1000)))
                waited += next - now
            }
            releaseOutgoing(now: max(now, next), dealer)
        }
        let o = outgoing.stats, i = incoming.stats
        logger.info("emulated network", metadata: [
            "out": "\(o.delivered) delivered, \(o.dropped) dropped (\(o.droppedByPartition) by partition), \(o.delayed) delayed, \(o.bytesDelivered) bytes",
            "in": "\(i.delivered) delivered, \(i.dropped) dropped (\(i.droppedByPartition) by partition), \(i.delayed) delayed, \(i.bytesDelivered) bytes",
            "unsent": "\(outgoing.pendingCount + Int(sendFailures))"])
    }

    private func releaseOutgoing(now: Int64, _ dealer: ZMQSocket) {
        outgoing.releaseDue(at: now) { frame in
            if (try? dealer.send([frame], dontWait: true)) != true { sendFailures += 1 }
        }
    }

    // MARK: Control file

    private func followControlFile(now: Int64) {
        guard controlFile != nil, let (c, source) = control.poll(now: now, current: current, logger: logger) else { return }
        apply(c, source: source)
    }

    private func apply(_ c: NetworkConditions, source: String) {
        guard c != current else { return }
        logger.notice("network conditions changed", metadata: ["from": "\(current)", "to": "\(c)", "source": "\(source)"])
        current = c
        outgoing.setConditions(c)
        incoming.setConditions(c)
    }
}

/// Follows a node's network control file (JSON of `NetworkConditions`): looked at no more than
/// every 100 ms, read again when its inode, size or mtime change; while it exists it replaces the
/// configured conditions, once gone they apply again. A malformed file is reported once and
/// ignored; an empty one is taken as not written yet. Shared by the control plane's emulated link
/// and the data plane, so a fault (a partition) cuts both.
public struct NetworkControlFile: Sendable {
    public static let checkIntervalNanos: Int64 = .millis(100)
    public let path: String?
    public let configured: NetworkConditions
    private var lastCheck: Int64?
    private var stamp: FileStamp?
    private var lastProblem: String?

    public init(path: String?, configured: NetworkConditions) { self.path = path; self.configured = configured }

    /// The conditions to apply now and why, when they differ from `current`; nil when nothing changed.
    public mutating func poll(now: Int64, current: NetworkConditions, logger: Logger) -> (NetworkConditions, String)? {
        guard let path else { return nil }
        if let last = lastCheck, now - last < Self.checkIntervalNanos { return nil }
        lastCheck = now
        let fresh = FileStamp(path: path)
        guard fresh != stamp else { return nil }
        stamp = fresh
        guard fresh != nil else {
            lastProblem = nil
            return configured == current ? nil : (configured, "control file \(path) absent: the configured conditions")
        }
        do {
            guard let data = FileManager.default.contents(atPath: path) else { throw NetworkConditions.ParseError("cannot read the file") }
            // Most likely caught between truncation and write (`echo … > FILE`): wait for the content.
            if data.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { stamp = nil; return nil }
            let c = try NetworkConditions.decodeJSON(data)
            lastProblem = nil
            return c == current ? nil : (c, "control file \(path)")
        } catch {
            let reason = "\(error)"
            if reason != lastProblem {
                logger.error("ignoring the network control file \(path): \(reason)", metadata: ["conditions": "\(current)"])
                lastProblem = reason
            }
            return nil
        }
    }
}

/// What tells a file's content may have changed without reading it: inode, size and mtime.
public struct FileStamp: Equatable, Sendable {
    let inode: UInt64
    let size: Int64
    let seconds: Int
    let nanos: Int

    /// nil when the file does not exist (or cannot be looked at).
    public init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        inode = UInt64(st.st_ino)
        size = Int64(st.st_size)
        #if canImport(Darwin)
        seconds = Int(st.st_mtimespec.tv_sec)
        nanos = Int(st.st_mtimespec.tv_nsec)
        #else
        seconds = Int(st.st_mtim.tv_sec)
        nanos = Int(st.st_mtim.tv_nsec)
        #endif
    }
}

extension AgentSession {
    /// Where every encoded envelope leaves: straight to the socket, or onto the emulated link.
    @inline(__always)
    func transmit(_ frame: [UInt8], _ dealer: ZMQSocket) -> Bool {
        if let network { return network.send(frame, dealer) }
        return (try? dealer.send([frame], dontWait: true)) == true
    }
}
