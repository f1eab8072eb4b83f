import Foundation

/// Real GPUs on this host, as `nvidia-smi` lists them (nil where there is no nvidia-smi).
public enum NvidiaSMI {
    public struct GPU: Equatable { public var index: Int; public var name: String; public var memoryMiB: Int }

    public static func list() -> [GPU]? {
        let candidates = ["/usr/bin/nvidia-smi", "/usr/local/bin/nvidia-smi", "/usr/local/nvidia/bin/nvidia-smi"]
        guard let exe = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else { return nil }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        return parse(String(decoding: data, as: UTF8.self))
    }

    /// `0, NVIDIA H100 80GB HBM3, 81559` per line.
    public static func parse(_ text: String) -> [GPU] {
        text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard f.count == 3, let i = Int(f[0]), let m = Int(f[2]) else { return nil }
            return GPU(index: i, name: f[1], memoryMiB: m)
        }
    }
}
