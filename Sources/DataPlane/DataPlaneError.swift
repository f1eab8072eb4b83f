import Protocol

/// Why a transfer failed, on either side. Each case names what went wrong and, where the peer
/// told us, carries its words; `code` is what goes on the wire.
public enum DataPlaneError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The receiver would not take the transfer (its reason, e.g. no room).
    case refused(String)
    case checksumMismatch(chunk: UInt64, expected: UInt32, got: UInt32)
    case outOfOrder(String)
    case flowControlViolation(String)
    case unknownTransfer(UInt64)
    case unsupportedVersion(UInt32)
    case malformed(String)
    case cancelled(String)
    /// The receiving feature would not take a chunk's contents (its reason).
    case rejected(String)
    /// Nothing heard from the peer for the timeout: dead, partitioned or not listening.
    case peerUnreachable(endpoint: String, silenceMs: Int64)
    /// The peer reported an error we do not know more about.
    case remote(code: DataPlaneErrorCode, message: String)

    public var code: DataPlaneErrorCode {
        switch self {
        case .refused: return .refused
        case .checksumMismatch: return .checksumMismatch
        case .outOfOrder: return .outOfOrder
        case .flowControlViolation: return .flowControlViolation
        case .unknownTransfer: return .unknownTransfer
        case .unsupportedVersion: return .unsupportedDataVersion
        case .malformed: return .malformedFrame
        case .cancelled, .peerUnreachable: return .cancelled
        case .rejected: return .rejected
        case .remote(let code, _): return code
        }
    }

    public var description: String {
        switch self {
        case .refused(let why): return "transfer refused by the receiver: \(why)"
        case let .checksumMismatch(chunk, expected, got):
            return "chunk \(chunk) failed its checksum (CRC-32C header \(String(expected, radix: 16)), payload \(String(got, radix: 16)))"
        case .outOfOrder(let s): return "chunk out of order: \(s)"
        case .flowControlViolation(let s): return "flow control violated: \(s)"
        case .unknownTransfer(let id): return "no transfer \(id) in progress"
        case .unsupportedVersion(let v): return "data-plane protocol version \(v) is not supported (this build speaks \(dataPlaneProtocolVersion))"
        case .malformed(let s): return "malformed data-plane frame: \(s)"
        case .cancelled(let s): return "transfer cancelled: \(s)"
        case .rejected(let s): return "the receiver rejected the contents: \(s)"
        case let .peerUnreachable(endpoint, silence): return "peer \(endpoint) unreachable: nothing heard for \(silence) ms"
        case let .remote(code, message): return "peer reported \(code): \(message)"
        }
    }

    /// What a TransferError frame says of it: the bare reason for a refusal or a rejection (the
    /// peer names the kind again from the code), the whole description otherwise.
    public var wireMessage: String {
        switch self {
        case .refused(let why), .rejected(let why): return why
        default: return description
        }
    }

    /// The error as the peer reported it in a TransferError frame.
    static func fromWire(_ e: TransferError) -> DataPlaneError {
        switch e.code {
        case .refused: return .refused(e.message)
        case .rejected: return .rejected(e.message)
        default: return .remote(code: e.code, message: e.message)
        }
    }
}

/// The data-plane protocol version this build speaks (DataFrame.protocol_version).
public let dataPlaneProtocolVersion: UInt32 = 1
