import Foundation
import Testing
@testable import Registry

@Suite struct ConcurrencyTests {
    enum Outcome: Sendable, Equatable {
        case created
        case refused(RegistryError.Code)
        case failed(String)
    }

    /// 50 handshakes on 50 tenants and 50 racing handshakes on one tenant, all at once, on a
    /// file registry (a connection pool, as in production): exactly 51 links, and no tenant
    /// ever holds two live links.
    @Test func concurrentLinkingKeepsOneLiveLinkPerTenant() async throws {
        try await withTemporaryRegistry { open in
            let registry = try await open()
            for index in 0..<50 { _ = try await registry.createTenant(id: "tenant-\(index)", name: "Tenant \(index)") }
            _ = try await registry.createTenant(id: "contended", name: "Contended")

            let outcomes = await withTaskGroup(of: (String, Outcome).self) { group in
                for index in 0..<50 {
                    group.addTask { ("tenant-\(index)", await Self.link(registry, "tenant-\(index)")) }
                    group.addTask { ("contended", await Self.link(registry, "contended")) }
                }
                var outcomes: [(String, Outcome)] = []
                for await outcome in group { outcomes.append(outcome) }
                return outcomes
            }

            let spread = outcomes.filter { $0.0 != "contended" }.map(\.1)
            let contended = outcomes.filter { $0.0 == "contended" }.map(\.1)
            #expect(spread == Array(repeating: .created, count: 50))
            #expect(contended.filter { $0 == .created }.count == 1)
            #expect(contended.filter { $0 == .refused(.conflict) }.count == 49)

            let linked = try await registry.links(state: .linked)
            #expect(linked.count == 51)
            #expect(Set(linked.map(\.tenantID)).count == 51, "no tenant with two live links")
            #expect(try await registry.l2Keys(tenantID: "contended").count == 1)
            #expect(try await registry.consistencyProblems().isEmpty)
        }
    }

    static func link(_ registry: Registry, _ tenantID: String) async -> Outcome {
        do {
            _ = try await Fixture.link(registry, tenantID)
            return .created
        } catch let error as RegistryError {
            return .refused(error.code)
        } catch {
            return .failed(String(describing: error))
        }
    }
}
