import Crypto
package import Foundation

/// Bearer secrets the gateway hands out once (enrolment tokens, sessions, automation tokens,
/// CSRF tokens): 32 random bytes, base64url, behind a prefix that says what they are; only
/// their SHA-256 is ever stored.
package enum SecretToken {
    package static func make(prefix: String) -> String {
        prefix + Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    package static func hash(_ token: String) -> Data { Data(SHA256.hash(data: Data(token.utf8))) }
}
