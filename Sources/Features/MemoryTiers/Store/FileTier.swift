import DataPlane
import Foundation

/// NVMe: one file per block in the tier's directory, direct I/O where the filesystem allows it,
/// fdatasync on put. A put writes `<name>.tmp` (or a spare), fsyncs it and renames it to `<name>.blk`, so a process killed mid-put leaves at most a `.tmp` that recovery deletes (or a torn spare): a
/// torn block is never served. Every file starts with a header holding the payload's length and
/// CRC-32C, checked on every read. Contents survive an agent restart (`recovered`).
/// A removed block's file is kept as a spare (`<token>-<n>.spr`, up to `spareBudgetBytes`) and the next
/// put of the same file length writes over it in place, then renames it to `<name>.blk` (see `spares`).
public final class FileTier: TierBackend {
    public let kind = TierKind.nvme
    public let directory: String
    /// Whether files are opened with O_DIRECT (false where the filesystem refuses it, e.g. tmpfs).
    /// Learnt by whichever thread opens a file first (the session, the writer, the reader).
    public var directIO: Bool {
        get { directIOLock.lock(); defer { directIOLock.unlock() }; return directIOState }
    }
    private var directIOState: Bool
    private let directIOLock = NSLock()
    private static let magic: [UInt8] = Array("STRBLK01".utf8)
    static let headerBytes = 32
    static let alignment = 4096
    #if arch(arm64)
    public static let oDirect: Int32 = 0o200000
    #else
    public static let oDirect: Int32 = 0o40000
    #endif

    /// Opens (creating) the tier's directory; refuses one that is not a writable directory.
    /// `spareBudgetBytes`: removed blocks' files kept to be written over (disk the directory holds
    /// beyond its blocks; 0 keeps none).
    public init(directory: String, directIO: Bool = true, spareBudgetBytes: Int = 256 << 20) throws {
        self.directory = directory
        self.directIOState = directIO
        self.spareBudgetBytes = max(0, spareBudgetBytes)
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDir) {
            guard isDir.boolValue else { throw BlockStoreError(.tierUnavailable, "NVMe tier directory \(directory) is a file, not a directory") }
        } else {
            do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
                throw BlockStoreError(.tierUnavailable, "NVMe tier directory \(directory) is missing and cannot be created: \(error.localizedDescription)")
            }
        }
        guard access(directory, W_OK | R_OK | X_OK) == 0 else {
            throw BlockStoreError(.tierUnavailable, "NVMe tier directory \(directory) is not writable (\(String(cString: strerror(errno))))")
        }
    }

    public var label: String {
        "NVMe (files in \(directory), \(directIO ? "direct I/O" : "buffered I/O (the filesystem refuses O_DIRECT)"), fsync on put"
            + (spareBudgetBytes > 0 ? ", removed blocks' files written over (≤ \(spareBudgetBytes >> 20) MiB kept)" : "")
            + (writeBehind == nil ? "" : ", written behind by a writer thread")
            + (reader == nil ? ")" : ", read by a reader thread)")
    }

    /// File names are the key's bytes in hex: any key is a safe name, and the name gives the key back.
    static func fileName(_ key: String) -> String { key.utf8.map { String(format: "%02x", $0) }.joined() }
    static func key(fromFileName name: String) -> String? {
        let hex = Array(name.utf8)
        guard hex.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(hex.count / 2)
        var i = 0
        while i < hex.count {
            guard let b = UInt8(String(decoding: hex[i..<(i + 2)], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(b); i += 2
        }
        return String(bytes: bytes, encoding: .utf8)
    }

    private func path(_ key: String, _ ext: String) -> String { directory + "/" + Self.fileName(key) + ext }

    private func open(_ path: String, _ flags: Int32) throws -> Int32 {
        if directIO {
            let fd = Glibc.open(path, flags | Self.oDirect, 0o600)
            if fd >= 0 { return fd }
            if errno != EINVAL { throw ioError(path, errno) }
            directIOLock.lock(); directIOState = false; directIOLock.unlock()   // this filesystem refuses direct I/O: buffered from now on
        }
        let fd = Glibc.open(path, flags, 0o600)
        guard fd >= 0 else { throw ioError(path, errno) }
        return fd
    }

    private func ioError(_ path: String, _ err: Int32) -> BlockStoreError {
        let why = String(cString: strerror(err))
        switch err {
        case ENOSPC, EDQUOT: return BlockStoreError(.tierFull, "NVMe tier \(directory) is full (\(why)) writing \(path)")
        case ENOENT, EACCES, EROFS, ENOTDIR, EPERM: return BlockStoreError(.tierUnavailable, "NVMe tier \(directory): \(why) (\(path))")
        default: return BlockStoreError(.io, "NVMe tier \(directory): \(why) (\(path))")
        }
    }

    /// A buffer aligned for direct I/O, `count` rounded up to the alignment.
    fileprivate static func alignedBuffer(_ count: Int) -> (UnsafeMutableRawPointer, Int) {
        let size = alignedSize(count)
        var p: UnsafeMutableRawPointer?
        posix_memalign(&p, alignment, size)
        return (p!, size)
    }

    /// `count` rounded up to whole aligned blocks (at least one).
    static func alignedSize(_ count: Int) -> Int { max(alignment, (count + alignment - 1) / alignment * alignment) }

    /// Aligned buffers that reads and writes reuse (any thread may read: the session, the reader
    /// thread; the writer thread gives written images back).
    private let readBuffers = AlignedBufferPool()
    fileprivate let writeBuffers = AlignedBufferPool(keep: 8)

    /// A few aligned buffers kept for reuse: a read or write takes one of the aligned size it
    /// needs (or makes one) and gives it back; at most `keep` wait, and `keepBytes` in all.
    final class AlignedBufferPool: @unchecked Sendable {
        private let lock = NSLock()
        private var free: [(UnsafeMutableRawPointer, Int)] = []
        let keep: Int
        /// Bytes kept at most: large blocks (weight shards) are not held for ever.
        let keepBytes: Int
        init(keep: Int = 4, keepBytes: Int = 32 << 20) { self.keep = keep; self.keepBytes = keepBytes }
        func take(_ count: Int) -> (UnsafeMutableRawPointer, Int) {
            let size = FileTier.alignedSize(count)
            lock.lock()
            // The same aligned size only: a caller writes or reads the whole buffer it gets.
            if let i = free.firstIndex(where: { $0.1 == size }) {
                let b = free.remove(at: i)
                lock.unlock()
                return b
            }
            lock.unlock()
            return FileTier.alignedBuffer(count)
        }
        func give(_ p: UnsafeMutableRawPointer, _ size: Int) {
            lock.lock()
            free.append((p, size))
            var extra: [(UnsafeMutableRawPointer, Int)] = []
            var held = free.reduce(0) { $0 + $1.1 }
            // The oldest go first.
            while free.count > keep || held > keepBytes, !free.isEmpty {
                let b = free.removeFirst()
                held -= b.1
                extra.append(b)
            }
            lock.unlock()
            for (q, _) in extra { Foundation.free(q) }
        }
        /// Buffers waiting for reuse, and their bytes.
        var waiting: (count: Int, bytes: Int) { lock.lock(); defer { lock.unlock() }; return (free.count, free.reduce(0) { $0 + $1.1 }) }
        deinit { for (p, _) in free { Foundation.free(p) } }
    }

    /// A `fill_disk` fault: every write fails as it would on a full disk (emulated; reads go on).
    public var diskFullEmulated = false

    public func write(_ key: String, _ bytes: UnsafeRawBufferPointer) throws {
        if diskFullEmulated { throw BlockStoreError(.tierFull, "NVMe tier \(directory) is full (emulated by a fill_disk fault) writing \(key)") }
        let (buf, length) = image(bytes, key: key)
        if let behind = writeBehind {
            try behind.enqueue(key, buf, length: length, payload: bytes.count)
            return
        }
        defer { writeBuffers.give(buf, length) }
        try persist(key, buf, length: length)
    }

    /// The file's image: header (magic, length, CRC-32C) and payload in a buffer aligned for
    /// direct I/O; `length` is what to write (whole aligned blocks with direct I/O).
    /// The header also holds a hash of the block's key (bytes 24–31): a file is written over in
    /// place once its block is removed, so a file found under one key's name, or read while its
    /// block was removed and another written over it, must show it holds that key's block.
    static func keyHash(_ key: String) -> UInt64 {
        let h = stableHash(key)
        return h == 0 ? 1 : h   // 0 marks a file written before the key was recorded
    }

    private func image(_ bytes: UnsafeRawBufferPointer, key: String) -> (UnsafeMutableRawPointer, Int) {
        let crc = CRC32C.checksum(bytes)
        let (buf, size) = writeBuffers.take(Self.headerBytes + bytes.count)
        let headerBytes = Self.headerBytes
        memset(buf, 0, headerBytes)
        // Direct I/O writes whole aligned blocks: the tail past the payload is zeros, not what a reused buffer held.
        if size > headerBytes + bytes.count { memset(buf + headerBytes + bytes.count, 0, size - headerBytes - bytes.count) }
        Self.magic.withUnsafeBytes { buf.copyMemory(from: $0.baseAddress!, byteCount: 8) }
        buf.storeBytes(of: UInt64(bytes.count).littleEndian, toByteOffset: 8, as: UInt64.self)
        buf.storeBytes(of: crc.littleEndian, toByteOffset: 16, as: UInt32.self)
        buf.storeBytes(of: Self.keyHash(key).littleEndian, toByteOffset: 24, as: UInt64.self)
        if let base = bytes.baseAddress, !bytes.isEmpty { memcpy(buf + headerBytes, base, bytes.count) }
        return (buf, size)
    }

    /// Writes an image to a temporary file, fsyncs it and renames it over `<name>.blk` (unless
    /// `stillWanted` says the block was removed or rewritten meanwhile: then the file is retired).
    fileprivate func persist(_ key: String, _ buf: UnsafeMutableRawPointer, length size: Int, stillWanted: () -> Bool = { true }) throws {
        let temp = try writeTemp(key, buf, length: size)
        try commitTemp(key, temp, stillWanted: stillWanted)
    }

    /// A block's image written but not yet durable nor named: a spare written over in place, or
    /// `<name>.tmp`. Neither name is ever served, so a process killed mid-write tears nothing a
    /// read could see (recovery deletes `.tmp` files and keeps spares as spares).
    fileprivate struct TempFile { let fd: Int32; let path: String }

    /// Writes an image over a spare of its length, else into a fresh `<name>.tmp`; returns the
    /// open file, not yet fsynced.
    fileprivate func writeTemp(_ key: String, _ buf: UnsafeMutableRawPointer, length size: Int) throws -> TempFile {
        let payload = Int(UInt64(littleEndian: buf.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        // Direct I/O writes whole aligned blocks; buffered I/O writes exactly the file.
        let length = directIO ? size : Self.headerBytes + payload
        let temp: TempFile
        if let spare = takeSpare(length: length), let fd = openSpare(spare) {
            // The same length: the write covers all of it, nothing of the old block is left. No
            // O_TRUNC: its extents stay allocated, which is the point.
            temp = TempFile(fd: fd, path: spare)
        } else {
            let tmp = path(key, ".tmp")
            do { temp = TempFile(fd: try open(tmp, O_CREAT | O_WRONLY | O_TRUNC), path: tmp) } catch let e as BlockStoreError where e.code == .tierFull && dropSpares() > 0 {
                temp = TempFile(fd: try open(tmp, O_CREAT | O_WRONLY | O_TRUNC), path: tmp)   // the spares gave their space back
            }
        }
        var done = 0
        while done < length {
            let n = pwrite(temp.fd, buf + done, length - done, off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                let err = errno
                close(temp.fd); unlink(temp.path)
                if err == ENOSPC && dropSpares() > 0 { return try writeTemp(key, buf, length: size) }
                throw ioError(temp.path, err)
            }
            done += n
        }
        return temp
    }

    /// fsyncs and closes a file written by `writeTemp`, then renames it over `<name>.blk`
    /// unless the block is no longer wanted (then it is retired: kept as a spare or unlinked).
    /// `synced`: a syncfs since the write made it durable already (see the write-behind writer).
    fileprivate func commitTemp(_ key: String, _ temp: TempFile, synced: Bool = false, stillWanted: () -> Bool) throws {
        let final = path(key, ".blk")
        // fdatasync: the data and what reading it needs (size, extents); a file written over in
        // place then needs no journal commit for its times.
        guard synced || fdatasync(temp.fd) == 0 else { let e = ioError(temp.path, errno); close(temp.fd); unlink(temp.path); throw e }
        close(temp.fd)
        guard stillWanted() else { retire(temp.path); return }
        // The rename is not fsynced into the directory: after a power loss a block put just before
        // may be missing, never torn (a cache may lose a block; it must not serve a wrong one).
        guard rename(temp.path, final) == 0 else { let e = ioError(final, errno); unlink(temp.path); throw e }
    }

    // MARK: Write-behind

    /// Set by `enableWriteBehind`: writes are queued for a writer thread (see there).
    private var writeBehind: WriteBehind?

    /// From now on a write copies its block into the file image and queues it; a writer thread
    /// does the pwrite, the sync (one syncfs per batch) and the rename. Reads of a queued block are served from the queued copy,
    /// a remove cancels it. Why: a memory host's session thread also sends its heartbeats and
    /// runs its data plane, and an fsync per block under load stalled it long enough to be
    /// declared dead (seen in offload.yaml under `nvme`). What a kill -9 loses: blocks still
    /// queued (at most `maxQueuedBytes`), never a torn one. A queue over `maxQueuedBytes` refuses
    /// writes as `tier-full` (the disk cannot keep up) rather than block the thread.
    public func enableWriteBehind(maxQueuedBytes: Int = 256 << 20) {
        guard writeBehind == nil else { return }
        writeBehind = WriteBehind(tier: self, maxQueuedBytes: maxQueuedBytes)
    }

    /// Blocks still waiting for the disk, and their bytes (0 without write-behind).
    public var queuedWrites: (blocks: Int, bytes: Int) { writeBehind?.queued ?? (0, 0) }
    /// Queued writes that failed on the disk: those blocks are gone (a later read fails by name
    /// and the store counts a miss).
    public var writeBehindFailures: Int { writeBehind?.failures ?? 0 }
    /// Waits until every queued write is on disk (tests, orderly shutdown).
    public func flush() { writeBehind?.flush() }

    fileprivate final class WriteBehind: @unchecked Sendable {
        /// A block's image to write, or (no image) a removed block's file to unlink.
        private struct Job { let key: String; let seq: UInt64; let buf: UnsafeMutableRawPointer?; let length: Int; let payload: Int }
        private let lock = NSCondition()
        private var queue: [Job] = []
        private var head = 0
        /// The newest queued image of each key not yet on disk (a read serves it).
        private var pending: [String: Job] = [:]
        private var failed: [String: BlockStoreError] = [:]
        private var seq: UInt64 = 0
        private var bytes = 0
        private var busy = false
        private(set) var failures = 0
        let maxQueuedBytes: Int
        // The writer thread holds this object and this object its tier: both live as long as the
        // process (one per memory host's NVMe tier), so a queued block is never written into freed memory.
        let tier: FileTier

        init(tier: FileTier, maxQueuedBytes: Int) {
            self.tier = tier
            self.maxQueuedBytes = maxQueuedBytes
            let t = Thread { self.run() }
            t.name = "strato-nvme-writer"
            t.start()
        }

        var queued: (blocks: Int, bytes: Int) { lock.lock(); defer { lock.unlock() }; return (pending.count, bytes) }

        func enqueue(_ key: String, _ buf: UnsafeMutableRawPointer, length: Int, payload: Int) throws {
            lock.lock(); defer { lock.unlock() }
            if bytes + length > maxQueuedBytes && bytes > 0 {
                tier.writeBuffers.give(buf, length)
                throw BlockStoreError(.tierFull, "NVMe tier \(tier.directory) has \(bytes >> 20) MiB queued for the disk (limit \(maxQueuedBytes >> 20) MiB): writing \(key) refused")
            }
            seq += 1
            let job = Job(key: key, seq: seq, buf: buf, length: length, payload: payload)
            queue.append(job)
            pending[key] = job
            failed[key] = nil
            bytes += length
            lock.broadcast()
        }

        /// The queued image's payload, nil when `key` is not queued; throws a failed write's error.
        func read(_ key: String) throws -> [UInt8]? {
            lock.lock(); defer { lock.unlock() }
            if let e = failed[key] { throw e }
            guard let j = pending[key], let buf = j.buf else { return nil }
            return [UInt8](UnsafeRawBufferPointer(start: buf + FileTier.headerBytes, count: j.payload))
        }

        /// The block is removed: a queued image is not written (or its file is dropped once
        /// written), and its file is unlinked by the writer, in order with the writes: an unlink
        /// waits on the disk's journal like the fsyncs beside it (under load it held the session
        /// thread for up to a second).
        func remove(_ key: String) {
            lock.lock(); defer { lock.unlock() }
            pending[key] = nil
            failed[key] = nil
            seq += 1
            queue.append(Job(key: key, seq: seq, buf: nil, length: 0, payload: 0))
            lock.broadcast()
        }

        func flush() {
            lock.lock(); defer { lock.unlock() }
            while head < queue.count || busy { lock.wait() }
        }

        /// Jobs taken at once: their files are all written, then made durable together (group
        /// commit; one journal commit per block made puts a third slower than the disk).
        static let batchJobs = 32, batchBytes = 32 << 20

        private func run() {
            while true {
                lock.lock()
                while head >= queue.count { lock.wait() }
                var batch: [Job] = []
                var taken = 0
                while head < queue.count && batch.count < Self.batchJobs && (batch.isEmpty || taken + queue[head].length <= Self.batchBytes) {
                    batch.append(queue[head]); taken += queue[head].length; head += 1
                }
                if head > 1024 && head * 2 > queue.count { queue.removeFirst(head); head = 0 }
                // A write is wanted while it is the newest of its key and not removed.
                let wanted = batch.map { $0.buf != nil && pending[$0.key]?.seq == $0.seq }
                busy = true
                lock.unlock()
                var fds = [TempFile?](repeating: nil, count: batch.count)
                var errors = [BlockStoreError?](repeating: nil, count: batch.count)
                // In queue order: unlinks, and each wanted block's file written.
                for (i, job) in batch.enumerated() {
                    guard let buf = job.buf else {
                        // A later write of the same key in this batch renames after this (phase 3).
                        tier.retire(tier.directory + "/" + FileTier.fileName(job.key) + ".blk")
                        continue
                    }
                    guard wanted[i] else { continue }
                    do { fds[i] = try tier.writeTemp(job.key, buf, length: job.length) } catch let e as BlockStoreError { errors[i] = e } catch {}
                }
                // One syncfs makes every file of the batch durable at once (data and inodes: the
                // filesystem's dirty state, whoever wrote it), where an fsync per file waited on the
                // disk once per file: in ten alternating `bench tiers` runs written-behind puts
                // reached 0.46-0.98x the raw disk (median 0.60) against 0.41-0.52x (median 0.47).
                // If it fails, each file is fsynced on its own, which says which one failed.
                let synced = fds.contains { $0 != nil } && FileTier.syncFilesystem(of: fds.compactMap { $0 }[0].fd)
                // Rename each (fsynced first unless synced), only if the block is still this one:
                // checked under the lock so a remove that races with the write never leaves a file behind.
                for (i, job) in batch.enumerated() {
                    guard let fd = fds[i] else { continue }
                    do {
                        try tier.commitTemp(job.key, fd, synced: synced) { [self] in
                            lock.lock(); defer { lock.unlock() }
                            return pending[job.key]?.seq == job.seq
                        }
                    } catch let e as BlockStoreError { errors[i] = e } catch {}
                }
                lock.lock()
                for (i, job) in batch.enumerated() {
                    guard let buf = job.buf else { continue }
                    if pending[job.key]?.seq == job.seq {
                        pending[job.key] = nil
                        if let error = errors[i] { failed[job.key] = error; failures += 1 }
                    } else if wanted[i] && errors[i] == nil && pending[job.key] == nil && failed[job.key] == nil {
                        // Removed after the rename: drop the file.
                        tier.retire(tier.directory + "/" + FileTier.fileName(job.key) + ".blk")
                    }
                    bytes -= job.length
                    tier.writeBuffers.give(buf, job.length)
                }
                busy = false
                lock.broadcast()
                lock.unlock()
            }
        }
    }

    // MARK: Detached reads

    /// Set by `enableDetachedReads`: reads may be handed to a reader thread (see there).
    private var reader: DetachedReader?

    /// Lets the store's owner hand reads to a reader thread (`submitReads`) and collect them when
    /// done (`finishedReads`), so that the thread which heartbeats never waits on the disk: a get
    /// of many NVMe blocks on the session thread held it long enough to be suspected (seen in
    /// offload.yaml under `nvme`). The reader reads and checks a block exactly as `read` does.
    public func enableDetachedReads() {
        guard reader == nil else { return }
        reader = DetachedReader(tier: self)
    }

    public var readsDetached: Bool { reader != nil }

    /// One block read by the reader thread: its bytes or why not, and the seconds the read took.
    public struct DetachedRead: Sendable {
        public let key: String
        public let result: Result<[UInt8], BlockStoreError>
        public let seconds: Double
    }

    /// Queues reads of `keys` for the reader thread; the batch's id, or nil without detached reads.
    public func submitReads(_ keys: [String]) -> UInt64? { reader?.submit(keys) }
    /// Batches whose reads are all done, in the order they were submitted (each once).
    public func finishedReads() -> [(id: UInt64, reads: [DetachedRead])] { reader?.takeFinished() ?? [] }
    /// Batches submitted and not yet taken back.
    public var readsOutstanding: Int { reader?.outstanding ?? 0 }

    fileprivate final class DetachedReader: @unchecked Sendable {
        private let lock = NSCondition()
        private var queue: [(id: UInt64, keys: [String])] = []
        private var done: [(id: UInt64, reads: [DetachedRead])] = []
        private var nextID: UInt64 = 0
        private(set) var outstandingCount = 0
        // As the writer: one per memory host's NVMe tier, living as long as the process.
        let tier: FileTier

        init(tier: FileTier) {
            self.tier = tier
            let t = Thread { self.run() }
            t.name = "strato-nvme-reader"
            t.start()
        }

        var outstanding: Int { lock.lock(); defer { lock.unlock() }; return outstandingCount }

        func submit(_ keys: [String]) -> UInt64 {
            lock.lock(); defer { lock.unlock() }
            nextID += 1
            queue.append((nextID, keys))
            outstandingCount += 1
            lock.broadcast()
            return nextID
        }

        func takeFinished() -> [(id: UInt64, reads: [DetachedRead])] {
            lock.lock(); defer { lock.unlock() }
            let out = done
            done.removeAll()
            outstandingCount -= out.count
            return out
        }

        private func run() {
            while true {
                lock.lock()
                while queue.isEmpty { lock.wait() }
                let job = queue.removeFirst()
                lock.unlock()
                var reads: [DetachedRead] = []
                reads.reserveCapacity(job.keys.count)
                for k in job.keys {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    let r: Result<[UInt8], BlockStoreError>
                    do { r = .success(try tier.read(k)) } catch let e as BlockStoreError { r = .failure(e) } catch {
                        r = .failure(BlockStoreError(.io, "NVMe block '\(k)': \(error)"))
                    }
                    reads.append(DetachedRead(key: k, result: r, seconds: Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9))
                }
                lock.lock()
                done.append((job.id, reads))
                lock.unlock()
            }
        }
    }

    /// A block's bytes, checked. Safe from any thread (the session's, or the reader's).
    public func read(_ key: String) throws -> [UInt8] {
        if let behind = writeBehind, let queued = try behind.read(key) { return queued }
        let p = path(key, ".blk")
        guard access(p, F_OK) == 0 else { throw BlockStoreError(.unknownKey, "NVMe tier holds no block '\(key)'") }
        let fd = try open(p, O_RDONLY)
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ioError(p, errno) }
        let fileSize = Int(st.st_size)
        // A buffer read into before: a fresh one would be faulted in, page by page, by the read
        // itself (about as long as the disk takes for a 1 MiB block here).
        let (buf, size) = readBuffers.take(fileSize)
        defer { readBuffers.give(buf, size) }
        var done = 0
        while done < fileSize {
            let n = pread(fd, buf + done, size - done, off_t(done))
            if n < 0 { if errno == EINTR { continue }; throw ioError(p, errno) }
            if n == 0 { break }
            done += n
        }
        guard done >= Self.headerBytes, memcmp(buf, Self.magic, 8) == 0 else {
            throw BlockStoreError(.corrupt, "NVMe block '\(key)' has no valid header (\(done) bytes in \(p))")
        }
        let length = Int(UInt64(littleEndian: buf.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        let crc = UInt32(littleEndian: buf.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
        let owner = UInt64(littleEndian: buf.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
        guard owner == 0 || owner == Self.keyHash(key) else {
            throw BlockStoreError(.corrupt, "NVMe file of block '\(key)' holds another block (its file was written over meanwhile)")
        }
        guard length <= done - Self.headerBytes else {
            throw BlockStoreError(.corrupt, "NVMe block '\(key)' is truncated: \(done - Self.headerBytes) of \(length) bytes")
        }
        let payload = UnsafeRawBufferPointer(start: buf + Self.headerBytes, count: length)
        guard CRC32C.checksum(payload) == crc else { throw BlockStoreError(.corrupt, "NVMe block '\(key)' fails its checksum") }
        return [UInt8](payload)
    }

    public func remove(_ key: String) {
        if let behind = writeBehind { behind.remove(key); return }   // the writer retires it
        retire(path(key, ".blk"))
    }

    // MARK: Spare files

    /// Removed blocks' files kept to be written over, by file length. Why: writing into a file's
    /// allocated extents skips the filesystem's block allocation and its journal. On this host's
    /// ext4 (1 MiB blocks, direct I/O, one syncfs per 32 files) writing over files took 1.2–1.7×
    /// the bandwidth of writing fresh ones; `bench tiers`' written-behind puts went from below the
    /// raw disk writing a fresh file to 0.85–0.92× the raw disk writing over one.
    public let spareBudgetBytes: Int
    private var spares: [Int: [String]] = [:]
    private var spareBytes = 0
    private var spareSerial = 0
    /// Names this instance's spares apart from an earlier run's (adopted by `recovered`).
    private let spareToken = String(UInt32.random(in: 0...UInt32.max), radix: 16)
    private let spareLock = NSLock()

    /// Spare files and their bytes.
    public var spareFiles: (count: Int, bytes: Int) {
        spareLock.lock(); defer { spareLock.unlock() }
        return (spares.values.reduce(0) { $0 + $1.count }, spareBytes)
    }

    /// A removed block's file (or a written one no longer wanted): kept as a spare while the
    /// budget allows (renamed out of the blocks' names first, so it is never served), else unlinked.
    func retire(_ blockPath: String) {
        var st = stat()
        guard stat(blockPath, &st) == 0 else { return }
        let length = Int(st.st_size)
        spareLock.lock()
        guard spareBudgetBytes > 0, spareBytes + length <= spareBudgetBytes else { spareLock.unlock(); unlink(blockPath); return }
        spareSerial += 1
        let spare = directory + "/\(spareToken)-\(spareSerial).spr"
        spareBytes += length   // held for this spare while it is renamed
        spareLock.unlock()
        // Renamed before it joins the pool, so no writer can take it half-way.
        let renamed = rename(blockPath, spare) == 0
        spareLock.lock()
        if renamed { spares[length, default: []].append(spare) } else { spareBytes -= length }
        spareLock.unlock()
        if !renamed { unlink(blockPath) }
    }

    /// A spare opened for writing over; one that cannot be opened is unlinked (not leaked).
    private func openSpare(_ spare: String) -> Int32? {
        if let fd = try? open(spare, O_WRONLY) { return fd }
        unlink(spare)
        return nil
    }

    /// A spare of exactly `length` bytes (the caller writes over it in place), nil when none.
    private func takeSpare(length: Int) -> String? {
        spareLock.lock(); defer { spareLock.unlock() }
        guard let spare = spares[length]?.popLast() else { return nil }
        spareBytes -= length
        return spare
    }

    /// Unlinks every spare (a full disk wants the space back); how many there were.
    @discardableResult
    func dropSpares() -> Int {
        spareLock.lock()
        let all = spares.values.flatMap { $0 }
        spares = [:]; spareBytes = 0
        spareLock.unlock()
        for f in all { unlink(f) }
        return all.count
    }

    /// Complete blocks left by an earlier run, oldest modification first; half-written `.tmp`
    /// files are deleted. (Checksums are checked when a block is read.)
    public func recovered() -> [(key: String, size: Int)] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        var found: [(key: String, size: Int, mtime: Double)] = []
        for name in names {
            let full = directory + "/" + name
            if name.hasSuffix(".tmp") { unlink(full); continue }
            if name.hasSuffix(".spr") { adoptSpare(full); continue }
            guard name.hasSuffix(".blk"), let key = Self.key(fromFileName: String(name.dropLast(4))) else { continue }
            var st = stat()
            guard stat(full, &st) == 0, st.st_size >= Self.headerBytes else { unlink(full); continue }
            let fd = Glibc.open(full, O_RDONLY)
            guard fd >= 0 else { continue }
            var header = [UInt8](repeating: 0, count: Self.headerBytes)
            let n = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress, Self.headerBytes, 0) }
            close(fd)
            guard n == Self.headerBytes, Array(header[0..<8]) == Self.magic else { unlink(full); continue }
            // Another key's block under this name (a spare written over whose renames a power loss undid): not this block.
            let owner = header.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 24, as: UInt64.self)) }
            guard owner == 0 || owner == Self.keyHash(key) else { unlink(full); continue }
            let length = header.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self))) }
            found.append((key, length, Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9))
        }
        return found.sorted { ($0.mtime, $0.key) < ($1.mtime, $1.key) }.map { ($0.key, $0.size) }
    }

    /// A spare left by an earlier run: kept within the budget, else unlinked.
    private func adoptSpare(_ path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return }
        let length = Int(st.st_size)
        spareLock.lock()
        let known = spares[length]?.contains(path) ?? false
        let keep = !known && spareBytes + length <= spareBudgetBytes
        if keep { spareBytes += length; spares[length, default: []].append(path) }
        spareLock.unlock()
        if !keep && !known { unlink(path) }
    }
}

extension FileTier {
    /// syncfs(2) on the filesystem holding `fd`: every dirty page and inode there written and the
    /// disk's cache flushed; it reports a write-back error seen since `fd` was opened (Linux 5.8+).
    static func syncFilesystem(of fd: Int32) -> Bool { strato_syncfs(fd) == 0 }
}

// Glibc's module map leaves out syncfs (a GNU extension); the symbol is in libc.
@_silgen_name("syncfs") private func strato_syncfs(_ fd: Int32) -> Int32
