import CMKCore
@testable import CMKServer
import ControlPlane
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOFoundationEssentialsCompat
import TestSupport
import Testing

/// `Docs/openapi.yaml` is a valid OpenAPI 3.1 document, every route it documents exists on the
/// running router, every API route the router has is documented, and the server serves it.
@Suite(.serialized) struct OpenAPITests {
    static let path = SoftHSMFixture.repositoryRoot + "/Docs/openapi.yaml"

    /// The documented operations, by Python's YAML parser and openapi-spec-validator.
    func documentedOperations(_ document: String = Self.path) throws -> [(method: String, path: String)] {
        let script = """
        import sys, yaml
        from openapi_spec_validator import validate
        spec = yaml.safe_load(open(sys.argv[1]))
        validate(spec)
        assert spec["openapi"].startswith("3.1")
        for path, item in spec["paths"].items():
            for method in item:
                if method in ("get", "post", "put", "patch", "delete"):
                    print(method.upper(), path)
        """
        let result = try SoftHSMFixture.run("/usr/bin/env", ["python3", "-c", script, document])
        try #require(result.status == 0, "openapi-spec-validator: \(result.error)")
        return result.output.split(separator: "\n").map { line in
            let parts = line.split(separator: " ", maxSplits: 1)
            return (String(parts[0]), String(parts[1]))
        }
    }

    @Test func documentValidatesAndEveryDocumentedRouteExists() async throws {
        let operations = try documentedOperations()
        #expect(operations.count >= 16)
        let harness = try ServerHarness()
        try await harness.test { client, _ in
            // The dashboard's event stream never ends; PortalTests reads it over a live connection.
            for (method, path) in operations where path != "/api/v1/events/stream" {
                let uri = path.replacingOccurrences(of: #"\{[a-z]+\}"#, with: "undocumented-x", options: .regularExpression)
                let response = try await client.execute(uri: uri, method: HTTPRequest.Method(rawValue: method)!, headers: ServerHarness.auth,
                                                        body: method == "POST" ? ServerHarness.body("{}") : nil)
                let routeMissing = response.status == .notFound && response.text.contains("no such resource")
                #expect(!routeMissing && response.status != .methodNotAllowed, "\(method) \(path) is documented but not routed")
            }
            let served = try await client.execute(uri: "/openapi.yaml", method: .get)
            #expect(served.status == .ok)
            #expect(Data(buffer: served.body) == FileManager.default.contents(atPath: Self.path))
        }
    }

    /// Every `group.get/post/…` registration under Sources/CMKServer (the `/api/v1` groups).
    static func routedAPIOperations() throws -> [String] {
        let root = SoftHSMFixture.repositoryRoot + "/Sources/CMKServer"
        let files = try FileManager.default.subpathsOfDirectory(atPath: root).filter { $0.hasSuffix(".swift") }
        let source = try files.map { try String(contentsOfFile: "\(root)/\($0)", encoding: .utf8) }.joined(separator: "\n")
        let pattern = try NSRegularExpression(pattern: #"group\.(get|post|delete|put|patch)\("([^"]+)""#)
        let routes = pattern.matches(in: source, range: NSRange(source.startIndex..., in: source)).map { match -> String in
            let method = String(source[Range(match.range(at: 1), in: source)!]).uppercased()
            let path = String(source[Range(match.range(at: 2), in: source)!])
                .replacingOccurrences(of: #":([a-z]+)"#, with: "{$1}", options: .regularExpression)
            return "\(method) /api/v1/\(path)"
        }
        return routes
    }

    @Test func everyRoutedAPIOperationIsDocumented() throws {
        let documented = Set(try documentedOperations().map { "\($0.method) \($0.path)" })
        let routes = try Self.routedAPIOperations()
        #expect(routes.count >= 25)
        for route in routes { #expect(documented.contains(route), "\(route) is routed but not documented") }
    }

    /// The policy table covers exactly the routed administrative operations (login aside), and
    /// Docs/Authorization.md shows the same table.
    @Test func thePolicyTableCoversEveryRouteAndTheDocsShowIt() throws {
        let routes = Set(try Self.routedAPIOperations()).subtracting(["POST /api/v1/session"])
        let ruled = Set(AccessPolicy.rules.map { "\($0.method) \($0.path)" })
        #expect(routes == ruled)
        let doc = try String(contentsOfFile: SoftHSMFixture.repositoryRoot + "/Docs/Authorization.md", encoding: .utf8)
        #expect(doc.contains(AccessPolicy.markdown), "regenerate the table in Docs/Authorization.md from AccessPolicy.markdown")
    }
}

extension OpenAPITests {
    /// The node's application API (Docs/node-openapi.yaml) is valid and matches its router.
    @Test func theNodeAPIDocumentMatchesItsRoutes() throws {
        let documented = Set(try documentedOperations(SoftHSMFixture.repositoryRoot + "/Docs/node-openapi.yaml").map { "\($0.method) \($0.path)" })
        let source = try String(contentsOfFile: SoftHSMFixture.repositoryRoot + "/Sources/NodeAgent/NodeAPI.swift", encoding: .utf8)
        let pattern = try NSRegularExpression(pattern: #"router\.(get|post|delete|put|patch)\("([^"]+)""#)
        let routes = Set(pattern.matches(in: source, range: NSRange(source.startIndex..., in: source)).map { match -> String in
            let method = String(source[Range(match.range(at: 1), in: source)!]).uppercased()
            let path = String(source[Range(match.range(at: 2), in: source)!])
                .replacingOccurrences(of: #":([a-z]+)"#, with: "{$1}", options: .regularExpression)
            return "\(method) /\(path)"
        })
        #expect(routes.count == 5)
        #expect(routes == documented)
    }
}

@Suite struct DateFormatTests {
    @Test(arguments: [(0.0, "1970-01-01T00:00:00.000Z"), (1_795_000_000.123, "2026-11-18T11:06:40.123Z"),
                      (-1.5, "1969-12-31T23:59:58.500Z"), (951_782_400.0, "2000-02-29T00:00:00.000Z")])
    func rfc3339Dates(seconds: Double, expected: String) {
        #expect(RFC3339.format(Date(timeIntervalSince1970: seconds)) == expected)
    }
}
