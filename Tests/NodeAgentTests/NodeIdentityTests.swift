import Crypto
import Foundation
import NIOCore
@testable import NodeAgent
import Testing

@Suite struct NodeIdentityTests {
    func temporaryDirectory() -> String {
        NSTemporaryDirectory() + "node-identity-\(getpid())-\(UInt32.random(in: 0...UInt32.max))/data"
    }

    @Test func theFirstStartMakesPrivateKeysAndLaterStartsReuseThem() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: (directory as NSString).deletingLastPathComponent) }
        var identity = try NodeIdentity.loadOrCreate(directory: directory)
        #expect(identity.state == NodeIdentity.State())
        for file in ["signing.key", "hpke.key"] {
            let mode = try #require(try FileManager.default.attributesOfItem(atPath: "\(directory)/\(file)")[.posixPermissions] as? Int)
            #expect(mode == 0o600, "\(file) is private")
        }
        let directoryMode = try #require(try FileManager.default.attributesOfItem(atPath: directory)[.posixPermissions] as? Int)
        #expect(directoryMode == 0o700)
        try identity.update { $0.id = "node-1"; $0.region = "eu-west-1"; $0.lastEvent = 42 }

        let again = try NodeIdentity.loadOrCreate(directory: directory)
        #expect(again.signingKey.publicKey.rawRepresentation == identity.signingKey.publicKey.rawRepresentation)
        #expect(again.hpkeKey.publicKey.rawRepresentation == identity.hpkeKey.publicKey.rawRepresentation)
        #expect(again.state.id == "node-1" && again.state.region == "eu-west-1" && again.state.lastEvent == 42)
    }

    @Test func aKeyFileOthersCanReadIsRefused() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: (directory as NSString).deletingLastPathComponent) }
        _ = try NodeIdentity.loadOrCreate(directory: directory)
        chmod("\(directory)/signing.key", 0o644)
        #expect(throws: NodeIdentity.Failure.self) { try NodeIdentity.loadOrCreate(directory: directory) }
        chmod("\(directory)/signing.key", 0o600)
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: "\(directory)/node.json"))
        #expect(throws: NodeIdentity.Failure.self) { try NodeIdentity.loadOrCreate(directory: directory) }
    }
}

@Suite struct ServerSentEventsTests {
    @Test func messagesSplitAcrossChunksAreReassembled() {
        var parser = ServerSentEvents()
        #expect(parser.feed(ByteBuffer(string: ": heartbeat\n\nid: 7\nevent: l1.rev")).isEmpty)
        let messages = parser.feed(ByteBuffer(string: "oked\ndata: {\"a\":1}\r\n\nid: 8\ndata:x\ndata: y\n\n"))
        #expect(messages == [
            ServerSentEvents.Message(id: "7", event: "l1.revoked", data: #"{"a":1}"#),
            ServerSentEvents.Message(id: "8", event: nil, data: "x\ny"),
        ])
        #expect(parser.feed(ByteBuffer(string: ": only a comment\n\n")).isEmpty)
    }
}
