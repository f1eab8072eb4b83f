import CZeroMQ

/// A libzmq call failed. `code` is libzmq's errno; `operation` names the call that failed.
public struct ZMQError: Error, CustomStringConvertible, Equatable {
    public let code: Int32
    public let operation: String

    public init(code: Int32, operation: String) {
        self.code = code
        self.operation = operation
    }

    /// The context was terminated while the call was blocked: the owner must close its socket.
    public var isContextTerminated: Bool { code == ETERM }

    public var description: String {
        "\(operation) failed: \(String(cString: zmq_strerror(code))) (errno \(code))"
    }

    static func last(_ operation: String) -> ZMQError {
        ZMQError(code: zmq_errno(), operation: operation)
    }
}
