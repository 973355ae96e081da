import Foundation
import Testing
@testable import Registry

@Suite struct IVKVersionTests {
    @Test func versionsIncrementFromOne() async throws {
        let registry = try await makeRegistry()
        #expect(try await registry.currentIVK() == nil)
        #expect(try await registry.ivkVersions().isEmpty)
        let first = try await registry.addIVKVersion(keyReference: "pkcs11:token=platform;object=ivk-1")
        let second = try await registry.addIVKVersion(keyReference: "pkcs11:token=platform;object=ivk-2")
        #expect(first.version == 1 && second.version == 2)
        #expect(try await registry.currentIVK() == second)
        #expect(try await registry.ivkVersions() == [first, second])
    }

    @Test func concurrentAdditionsGetDistinctVersions() async throws {
        try await withTemporaryRegistry { open in
            let registry = try await open()
            let versions = try await withThrowingTaskGroup(of: IVKVersion.self) { group in
                for index in 1...20 {
                    group.addTask { try await registry.addIVKVersion(keyReference: "pkcs11:token=platform;object=ivk-\(index)") }
                }
                var versions: [Int] = []
                for try await version in group { versions.append(version.version) }
                return versions
            }
            #expect(versions.sorted() == Array(1...20))
            #expect(try await registry.currentIVK()?.version == 20)
        }
    }

    @Test func ivkReferenceWithAPINIsRefused() async throws {
        let registry = try await makeRegistry()
        await #expect(throws: RegistryError(.invalidInput, "")) {
            try await registry.addIVKVersion(keyReference: "pkcs11:token=platform;object=ivk?pin-value=1234")
        }
        #expect(try await registry.currentIVK() == nil)
    }
}
