import CMKCore
import ControlPlane
import Foundation
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore
import NIOFoundationEssentialsCompat
import ServiceLifecycle

/// The Sovereign Portal's files (plain HTML, CSS and JavaScript shipped in the package, no
/// build step), served at `/` under a strict Content-Security-Policy, and the dashboard's live
/// feed (`GET /api/v1/events/stream`).
struct PortalController {
    let gateway: Gateway

    static let files: [String: (file: String, type: String)] = [
        "/": ("index.html", "text/html; charset=utf-8"),
        "/portal/portal.js": ("portal.js", "text/javascript; charset=utf-8"),
        "/portal/verify.js": ("verify.js", "text/javascript; charset=utf-8"),
        "/portal/portal.css": ("portal.css", "text/css; charset=utf-8"),
    ]

    /// Scripts, styles and connections from this origin only; no framing, no inline code.
    static let securityHeaders: HTTPFields = [
        .init("Content-Security-Policy")!: "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        .init("X-Content-Type-Options")!: "nosniff",
        .init("Referrer-Policy")!: "no-referrer",
        .cacheControl: "no-store",
    ]

    /// Read once at start from the package's resources.
    static let contents: [String: ByteBuffer] = {
        var contents: [String: ByteBuffer] = [:]
        for (path, entry) in files {
            if let url = Bundle.module.url(forResource: entry.file, withExtension: nil, subdirectory: "Portal"),
               let data = FileManager.default.contents(atPath: url.path) {
                contents[path] = ByteBuffer(data: data)
            }
        }
        return contents
    }()

    func registerFiles(on router: Router<CMKRequestContext>) {
        for (path, entry) in Self.files {
            router.get(RouterPath(path)) { _, _ -> Response in
                guard let body = Self.contents[path] else { throw DomainError.notFound("the portal's files are not installed") }
                var headers = Self.securityHeaders
                headers[.contentType] = entry.type
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: body))
            }
        }
    }

    func registerFeed(on group: RouterGroup<CMKRequestContext>) {
        group.get("events/stream", use: feed)
    }

    /// `event: changed` whenever something the dashboard shows may have changed (no data: the
    /// page reads what its caller may see), a comment line every 15 s.
    @Sendable func feed(_ request: Request, context: CMKRequestContext) async throws -> Response {
        guard let (signals, end) = gateway.dashboard.subscribe(for: context.identity?.subject ?? "") else {
            throw DomainError(.tooManyStreams,
                           "\(DashboardFeed.maxPerCaller) live feeds are open for this caller (or \(DashboardFeed.maxTotal) in all); close a tab first")
        }
        let body = ResponseBody { writer in
            try await withGracefulShutdownHandler {
                try await writer.write(ByteBuffer(string: ": open\n\n"))
                for await signal in signals {
                    switch signal {
                    case .changed: try await writer.write(ByteBuffer(string: "event: changed\ndata: {}\n\n"))
                    case .heartbeat: try await writer.write(ByteBuffer(string: ": heartbeat\n\n"))
                    }
                }
            } onGracefulShutdown: {
                end()
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store"], body: body)
    }
}
