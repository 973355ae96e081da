import CMKCore
import Crypto
public import Foundation

/// AWS Signature Version 4, written once (checked against the published SigV4 test suite).
/// It signs every header it is given plus `host` and `x-amz-date`; the payload is hashed.
public struct SigV4Signer: Sendable {
    public struct Credentials: Sendable {
        public var accessKeyID: String
        public var secretAccessKey: String
        public var sessionToken: String?

        public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
            self.accessKeyID = accessKeyID
            self.secretAccessKey = secretAccessKey
            self.sessionToken = sessionToken
        }
    }

    public let credentials: Credentials
    public let region: String
    public let service: String

    public init(credentials: Credentials, region: String, service: String) {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// The request as signed: every header to send (the given ones, `host`, `x-amz-date`,
    /// `x-amz-security-token` when there is a session token, and `authorization`).
    public struct Signed: Sendable {
        public var headers: [(String, String)]
        public var canonicalRequest: String
        public var stringToSign: String
        public var authorization: String
    }

    /// `path` is the request path as sent (`/`); `query` the raw query string without `?`.
    public func sign(method: String, host: String, path: String, query: String = "", headers: [(String, String)] = [],
                     body: [UInt8] = [], date: Date = Date()) -> Signed {
        let amzDate = Self.timestamp(date)
        let day = String(amzDate.prefix(8))
        var all = headers
        if !all.contains(where: { $0.0.lowercased() == "host" }) { all.append(("Host", host)) }
        all.append(("X-Amz-Date", amzDate))
        if let token = credentials.sessionToken { all.append(("X-Amz-Security-Token", token)) }

        // Canonical headers: lower-case names, sorted; values trimmed, inner runs of spaces
        // collapsed; repeated names joined with commas in the order given.
        var grouped: [String: [String]] = [:]
        for (name, value) in all { grouped[name.lowercased(), default: []].append(Self.trimmed(value)) }
        let names = grouped.keys.sorted()
        let canonicalHeaders = names.map { "\($0):\(grouped[$0]!.joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")
        let canonicalRequest = [method.uppercased(), Self.canonicalPath(path), Self.canonicalQuery(query), canonicalHeaders, signedHeaders,
                                Hex.encode(SHA256.hash(data: body))].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope, Hex.encode(SHA256.hash(data: Array(canonicalRequest.utf8)))].joined(separator: "\n")
        let signature = Hex.encode(HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: signingKey(day: day)))
        let authorization = "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"
        return Signed(headers: all + [("Authorization", authorization)], canonicalRequest: canonicalRequest,
                      stringToSign: stringToSign, authorization: authorization)
    }

    func signingKey(day: String) -> SymmetricKey {
        func mac(_ key: SymmetricKey, _ text: String) -> SymmetricKey {
            SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: Array(text.utf8), using: key))
        }
        let secret = SymmetricKey(data: Array("AWS4\(credentials.secretAccessKey)".utf8))
        return mac(mac(mac(mac(secret, day), region), service), "aws4_request")
    }

    static func timestamp(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        return String(format: "%04d%02d%02dT%02d%02d%02dZ", c.year!, c.month!, c.day!, c.hour!, c.minute!, c.second!)
    }

    static func trimmed(_ value: String) -> String {
        value.trimmingCharacters(in: .whitespaces).split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
    }

    /// RFC 3986 unreserved characters stay; everything else is %XX (upper-case), per byte.
    static func encode(_ text: String, keepSlash: Bool = false) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(Character(UnicodeScalar(byte)))
            case UInt8(ascii: "/") where keepSlash:
                out.append("/")
            default:
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    static func decode(_ text: String) -> String { text.removingPercentEncoding ?? text }

    /// Each segment percent-decoded once then encoded (services other than S3 normalise paths).
    static func canonicalPath(_ path: String) -> String {
        guard !path.isEmpty else { return "/" }
        return encode(decode(path), keepSlash: true)
    }

    /// Names and values encoded, then sorted by name and value.
    static func canonicalQuery(_ query: String) -> String {
        guard !query.isEmpty else { return "" }
        let pairs = query.split(separator: "&").map { item -> (String, String) in
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (encode(decode(String(parts[0]))), encode(decode(parts.count > 1 ? String(parts[1]) : "")))
        }
        return pairs.sorted { $0.0 == $1.0 ? $0.1 < $1.1 : $0.0 < $1.0 }.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
    }

}
