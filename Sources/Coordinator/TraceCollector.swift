import Cluster
import Foundation
import Protocol

/// The coordinator's trace collector: appends every batch it receives to
/// `STATE/trace/collected.bin` (length-delimited `TraceBatch` records) and syncs the file before
/// the batch is acknowledged, so an acknowledged batch survives any crash after it. A batch sent
/// twice (its ack was lost) is stored twice; the merge drops duplicates by (instance, seq).
final class TraceCollector {
    let directory: String
    let path: String
    private let handle: FileHandle
    private(set) var batches: UInt64 = 0
    private(set) var events: UInt64 = 0

    init(stateDirectory: String) throws {
        directory = stateDirectory + "/trace"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/collected.bin"
        if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
        guard let h = FileHandle(forWritingAtPath: path) else {
            throw TraceSpool.SpoolError(path: path, message: "cannot open the trace collector file for writing")
        }
        handle = h
        try handle.seekToEnd()
    }

    /// Makes the batch durable; returns the acknowledgement to send.
    func store(_ batch: TraceBatch) throws -> TraceBatchAck {
        try handle.write(contentsOf: TraceSpool.frame(batch))
        try handle.synchronize()
        batches += 1
        events += UInt64(batch.events.count)
        var ack = TraceBatchAck()
        ack.process = batch.process
        ack.instance = batch.instance
        ack.throughSeq = batch.events.last?.seq ?? 0
        return ack
    }

    func close() { try? handle.close() }
}
