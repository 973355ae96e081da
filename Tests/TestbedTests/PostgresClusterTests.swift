import Foundation
import Testing
import TestSupport

/// The private PostgreSQL cluster the HA tests run on: it starts, answers, makes databases,
/// speaks TLS (and can insist on it), keeps its data across restarts and a crash, and drops
/// connections on request.
@Suite(.serialized) struct PostgresClusterTests {
    @Test func theSharedClusterAnswersAndMakesDatabases() throws {
        let cluster = try PostgresCluster.shared()
        #expect(try PostgresCluster.shared() === cluster)
        #expect(cluster.port != 5432)
        #expect(try cluster.psql("SELECT 1") == "1")
        #expect(try cluster.psql("SELECT current_user") == "cmk")

        let database = "testbed_\(UInt32.random(in: 0...UInt32.max))"
        try cluster.createDatabase(database)
        #expect(try cluster.psql("SELECT current_database()", database: database) == database)
        #expect(cluster.url(database: database) == "postgres://cmk@127.0.0.1:\(cluster.port)/\(database)")
        #expect(try cluster.psql("SHOW server_encoding") == "UTF8")
        #expect(try cluster.psql("SHOW fsync") == "off")
        #expect(try cluster.psql("SHOW max_connections") == "200")

        // The password file: the password alone, mode 0600, readable by this process.
        let attributes = try FileManager.default.attributesOfItem(atPath: cluster.passwordFile)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect(try String(contentsOfFile: cluster.passwordFile, encoding: .utf8) == cluster.password)
    }

    @Test func theSharedClusterSpeaksVerifiedTLSAndPlainTCP() throws {
        let cluster = try PostgresCluster.shared()
        let ca = try #require(cluster.caCertificatePath)
        #expect(FileManager.default.fileExists(atPath: ca))
        let overTLS = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        #expect(try cluster.psql(overTLS, sslMode: .verifyFull) == "t")
        #expect(try cluster.psql(overTLS, sslMode: .disable) == "f")
    }

    @Test func aClusterThatRequiresTLSRefusesAPlainConnection() throws {
        let cluster = try PostgresCluster()
        try cluster.start(tls: true, requireTLS: true)
        defer { try? cluster.stop() }
        #expect(try cluster.psql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == "t")
        let refused = #expect(throws: SoftHSMFixture.FixtureError.self) {
            try cluster.psql("SELECT 1", sslMode: .disable)
        }
        #expect(refused?.message.contains("no pg_hba.conf entry") == true)
        // The key the server reads is its own, and no one else's to read.
        let key = try #require(cluster.tls?.keyPath)
        let attributes = try FileManager.default.attributesOfItem(atPath: key)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        if geteuid() == 0 { #expect((attributes[.ownerAccountName] as? String) == "postgres") }

        try cluster.stop()
        #expect(!cluster.isRunning)
        #expect(!LoopbackPort.accepts(cluster.port))
    }

    @Test func dataSurvivesARestartAndACrash() throws {
        let cluster = try PostgresCluster()
        try cluster.start()
        defer { try? cluster.stop() }
        #expect(cluster.caCertificatePath == nil)
        try cluster.createDatabase("restart")
        try cluster.psql("CREATE TABLE kept (id int PRIMARY KEY, name text); INSERT INTO kept VALUES (1, 'one'), (2, 'two')", database: "restart")

        let port = cluster.port
        let before = cluster.postmasterPID
        try cluster.restart()
        #expect(cluster.port == port)
        #expect(cluster.postmasterPID != before)
        #expect(try cluster.psql("SELECT name FROM kept ORDER BY id", database: "restart") == "one\ntwo")

        // An immediate shutdown: no checkpoint; the next start replays the WAL.
        try cluster.psql("INSERT INTO kept VALUES (3, 'three')", database: "restart")
        try cluster.kill()
        #expect(!cluster.isRunning)
        try cluster.restart()
        #expect(try cluster.psql("SELECT count(*) FROM kept", database: "restart") == "3")
        #expect(try String(contentsOfFile: cluster.logPath, encoding: .utf8).contains("not properly shut down"))
    }

    @Test func terminatingConnectionsEndsOtherSessions() throws {
        let cluster = try PostgresCluster.shared()
        let database = "terminate_\(UInt32.random(in: 0...UInt32.max))"
        try cluster.createDatabase(database)

        // A client that would otherwise sit in a query for a minute.
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "\(cluster.binDirectory)/psql")
        sleeper.arguments = ["-X", "-tA", "-d", "host=127.0.0.1 port=\(cluster.port) user=cmk dbname=\(database) sslmode=disable",
                             "-c", "SELECT pg_sleep(60)"]
        var environment = ProcessInfo.processInfo.environment
        environment["PGPASSWORD"] = cluster.password
        sleeper.environment = environment
        sleeper.standardOutput = FileHandle.nullDevice
        sleeper.standardError = FileHandle.nullDevice
        try sleeper.run()
        defer { if sleeper.isRunning { kill(sleeper.processIdentifier, SIGKILL) } }

        try blockUntil("the sleeping session to appear") {
            try cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = '\(database)'") == "1"
        }
        #expect(try cluster.terminateConnections(database: database) == 1)
        try blockUntil("psql to exit after its session ended", timeout: .seconds(10)) { !sleeper.isRunning }
        #expect(sleeper.terminationStatus != 0)
        try blockUntil("the ended session to leave pg_stat_activity") {
            try cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = '\(database)'") == "0"
        }
    }
}
