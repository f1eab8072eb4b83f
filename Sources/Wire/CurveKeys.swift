import CZeroMQ

/// A CURVE key pair in Z85 text form (40 characters each), as libzmq's options take them.
public struct CurveKeyPair: Equatable, Sendable {
    public let publicKey: String
    public let secretKey: String

    public init(publicKey: String, secretKey: String) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// A fresh key pair from libzmq's generator (libsodium/tweetnacl randomness).
    public static func generate() throws -> CurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41)
        var sec = [CChar](repeating: 0, count: 41)
        if zmq_curve_keypair(&pub, &sec) != 0 { throw ZMQError.last("zmq_curve_keypair") }
        return CurveKeyPair(publicKey: String(cString: pub), secretKey: String(cString: sec))
    }

    /// True for a 40-character string of the Z85 alphabet.
    public static func isValidZ85Key(_ text: String) -> Bool {
        guard text.utf8.count == 40 else { return false }
        return decodeZ85(text) != nil
    }

    /// Z85 text of a 32-byte binary key (as ZAP hands public keys to the handler).
    public static func encodeZ85(_ binary: [UInt8]) -> String? {
        guard binary.count == 32 else { return nil }
        var out = [CChar](repeating: 0, count: 41)
        guard binary.withUnsafeBufferPointer({ zmq_z85_encode(&out, $0.baseAddress, 32) }) != nil else { return nil }
        return String(cString: out)
    }

    public static func decodeZ85(_ text: String) -> [UInt8]? {
        guard text.utf8.count == 40 else { return nil }
        var out = [UInt8](repeating: 0, count: 32)
        guard zmq_z85_decode(&out, text) != nil else { return nil }
        return out
    }
}

extension ZMQSocket {
    /// Makes this socket a CURVE server with the given key pair. Call before bind.
    public func makeCurveServer(_ keys: CurveKeyPair) throws {
        try setOption(ZMQ_CURVE_SERVER, Int32(1))
        try setOption(ZMQ_CURVE_SECRETKEY, string: keys.secretKey)
        // Route authentication through the ZAP handler even with no domain set.
        try setOption(ZMQ_ZAP_DOMAIN, string: "stratolab")
    }

    /// Makes this socket a CURVE client of the server with `serverPublicKey`. Call before connect.
    public func makeCurveClient(_ keys: CurveKeyPair, serverPublicKey: String) throws {
        try setOption(ZMQ_CURVE_SERVERKEY, string: serverPublicKey)
        try setOption(ZMQ_CURVE_PUBLICKEY, string: keys.publicKey)
        try setOption(ZMQ_CURVE_SECRETKEY, string: keys.secretKey)
    }
}
