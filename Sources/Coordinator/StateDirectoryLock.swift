import Foundation

/// One coordinator per state directory: an exclusive `flock` on `DIR/coordinator.lock`, taken
/// before the store is opened and held for the process's life (the kernel drops it when the process
/// dies, even by SIGKILL, so a restart after a crash is never blocked by a stale file). A second
/// coordinator on the same directory fails here, naming the pid that holds it, having written
/// nothing: the lock file exists already (the holder made it), the epoch and every row stay as
/// they were.
public final class StateDirectoryLock {
    public struct Held: Error, CustomStringConvertible {
        public let directory: String
        public let holderPid: Int32?
        public var description: String {
            "state directory \(directory) is in use by another coordinator" + (holderPid.map { " (pid \($0))" } ?? "")
                + "; stop it first or give this one another --state directory"
        }
    }

    public static let fileName = "coordinator.lock"
    private var fd: Int32

    public init(directory: String) throws {
        let fm = FileManager.default
        if !fm.fileExists(atPath: directory) { try fm.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        let path = (directory as NSString).appendingPathComponent(Self.fileName)
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, NSLocalizedDescriptionKey: "cannot open \(path): \(String(cString: strerror(errno)))"])
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = Self.readPid(fd)
            close(fd)
            fd = -1
            throw Held(directory: directory, holderPid: holder)
        }
        // Ours: the pid, for the next one's message.
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    private static func readPid(_ fd: Int32) -> Int32? {
        var buf = [UInt8](repeating: 0, count: 32)
        let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        return Int32(String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Releases the lock (also done when the process exits).
    public func release() {
        if fd >= 0 { flock(fd, LOCK_UN); close(fd); fd = -1 }
    }

    deinit { release() }
}
