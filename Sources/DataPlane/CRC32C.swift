import CChecksum

/// CRC-32C (Castagnoli) of data-plane chunks: the SSE4.2 instruction where the CPU has it, a table
/// otherwise (same results). Pure.
public enum CRC32C {
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        strato_crc32c(crc, bytes.baseAddress, bytes.count)
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }

    /// The table implementation alone (tests compare it with the hardware path).
    public static func softwareChecksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { strato_crc32c_software(0, $0.baseAddress, $0.count) }
    }

    /// Whether the hardware instruction is in use (said in benchmark output).
    public static var usesHardware: Bool { strato_crc32c_hardware() != 0 }
}
