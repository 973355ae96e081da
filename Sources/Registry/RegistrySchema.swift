import GRDB
import Storage

/// The Registry's schema, as named migrations. Applied migrations are recorded in
/// `grdb_migrations`, so opening a file again runs only what is new. Never edit a shipped
/// migration: add "v2", "v3", ….
///
/// Conventions: STRICT tables (SQLite checks the declared types); instants are INTEGER
/// milliseconds since the Unix epoch, UTC (see `Date+Registry.swift`); booleans are INTEGER
/// 0/1, SQLite's native form; blobs are BLOB. The business rules the Swift code checks inside
/// each transaction are also in the schema, so a bug or a second process cannot break them.
enum RegistrySchema {
    /// The advisory lock every PostgreSQL writer of the registry takes (ASCII "CMKR").
    static let postgresWriteLock: Int64 = 0x434D_4B52
    /// The session lock the leading replica holds (ASCII "CMKL").
    static let postgresLeaderLock: Int64 = 0x434D_4B4C
    /// Where PostgreSQL records the applied migrations (SQLite: GRDB's `grdb_migrations`).
    static let postgresMigrationTable = "registry_migrations"

    /// The registry file, opened and migrated: WAL (DatabasePool), `synchronous=NORMAL` on the
    /// writer, foreign keys, `secure_delete`.
    static func openFile(_ path: String) throws -> SQLStore {
        var configuration = configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA secure_delete = ON")
        }
        // DatabasePool puts the file in WAL mode itself and sets `synchronous=NORMAL` on its one
        // writer connection; `durableWrite` raises it to FULL around the kill-switch's commit.
        let pool = try DatabasePool(path: path, configuration: configuration)
        try migrator.migrate(pool)
        return SQLStore(sqlite: pool)
    }

    static func openInMemory() throws -> SQLStore {
        let queue = try DatabaseQueue(configuration: configuration())
        try migrator.migrate(queue)
        return SQLStore(sqlite: queue)
    }

    private static func configuration() -> Configuration {
        var configuration = Configuration()
        configuration.label = "Registry"
        configuration.foreignKeysEnabled = true
        // Another process (a second gateway, `cmk` tooling) may hold the write lock briefly;
        // wait for it rather than fail at once.
        configuration.busyMode = .timeout(10)
        return configuration
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE tenant (
                    id TEXT NOT NULL PRIMARY KEY,
                    name TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    version INTEGER NOT NULL CHECK (version >= 1)
                ) STRICT;
                CREATE INDEX tenant_by_creation ON tenant(created_at, id);

                CREATE TABLE l1_link (
                    id TEXT NOT NULL PRIMARY KEY,
                    tenant_id TEXT NOT NULL REFERENCES tenant(id),
                    provider TEXT NOT NULL,
                    keystore_id TEXT NOT NULL,
                    key_reference TEXT NOT NULL,
                    state TEXT NOT NULL CHECK (state IN ('PENDING_VALIDATION', 'LINKED', 'REVOKED')),
                    last_probe_at INTEGER,
                    last_probe_passed INTEGER CHECK (last_probe_passed IN (0, 1)),
                    last_probe_report TEXT,
                    created_at INTEGER NOT NULL,
                    revoked_at INTEGER,
                    version INTEGER NOT NULL CHECK (version >= 1),
                    CHECK ((state = 'REVOKED') = (revoked_at IS NOT NULL)),
                    -- The target of l2_key's (link_id, tenant_id) reference.
                    UNIQUE (id, tenant_id)
                ) STRICT;
                -- One live link per tenant; the rule createLink checks, enforced here too.
                CREATE UNIQUE INDEX l1_link_one_unrevoked_per_tenant ON l1_link(tenant_id) WHERE state <> 'REVOKED';
                CREATE INDEX l1_link_by_tenant ON l1_link(tenant_id, created_at, id);
                CREATE INDEX l1_link_by_state ON l1_link(state, created_at, id);
                -- Revocation is final: restoring access is a new handshake and a new link.
                CREATE TRIGGER l1_link_revocation_is_final
                BEFORE UPDATE OF state ON l1_link
                WHEN OLD.state = 'REVOKED' AND NEW.state <> 'REVOKED'
                BEGIN
                    SELECT RAISE(ABORT, 'a revoked link cannot be restored; make a new link');
                END;

                CREATE TABLE l2_key (
                    id TEXT NOT NULL PRIMARY KEY,
                    tenant_id TEXT NOT NULL REFERENCES tenant(id),
                    link_id TEXT NOT NULL UNIQUE,
                    sovereign_binding BLOB NOT NULL CHECK (length(sovereign_binding) > 0),
                    sovereign_mechanism TEXT NOT NULL,
                    sovereign_ivk_version INTEGER NOT NULL,
                    active_binding BLOB,
                    active_mechanism TEXT,
                    active_ivk_version INTEGER,
                    state TEXT NOT NULL CHECK (state IN ('ACTIVE', 'LOCKED')),
                    created_at INTEGER NOT NULL,
                    locked_at INTEGER,
                    version INTEGER NOT NULL CHECK (version >= 1),
                    -- An L2 belongs to the tenant of its link: isolation holds in the data too.
                    FOREIGN KEY (link_id, tenant_id) REFERENCES l1_link(id, tenant_id),
                    -- ACTIVE has its active binding; LOCKED has none left (the kill-switch's point).
                    CHECK (
                        (state = 'ACTIVE' AND active_binding IS NOT NULL AND active_mechanism IS NOT NULL
                            AND active_ivk_version IS NOT NULL AND locked_at IS NULL)
                        OR
                        (state = 'LOCKED' AND active_binding IS NULL AND active_mechanism IS NULL
                            AND active_ivk_version IS NULL AND locked_at IS NOT NULL)
                    )
                ) STRICT;
                CREATE INDEX l2_key_by_tenant ON l2_key(tenant_id, created_at, id);
                -- The kill-switch's invariant: a revoked link never has an ACTIVE L2. The lock
                -- comes first (in the same transaction), so the revocation can check it.
                CREATE TRIGGER l1_link_revocation_needs_locked_l2
                BEFORE UPDATE OF state ON l1_link
                WHEN NEW.state = 'REVOKED' AND EXISTS (SELECT 1 FROM l2_key WHERE link_id = NEW.id AND state = 'ACTIVE')
                BEGIN
                    SELECT RAISE(ABORT, 'lock the link''s L2 key before revoking the link');
                END;
                CREATE TRIGGER l2_key_active_needs_live_link
                BEFORE INSERT ON l2_key
                WHEN NEW.state = 'ACTIVE' AND EXISTS (SELECT 1 FROM l1_link WHERE id = NEW.link_id AND state = 'REVOKED')
                BEGIN
                    SELECT RAISE(ABORT, 'an L2 key of a revoked link cannot be active');
                END;
                -- A locked L2 can only come back through L1, as a new L2.
                CREATE TRIGGER l2_key_lock_is_final
                BEFORE UPDATE OF state ON l2_key
                WHEN OLD.state = 'LOCKED' AND NEW.state <> 'LOCKED'
                BEGIN
                    SELECT RAISE(ABORT, 'a locked L2 key cannot be activated again; make a new link');
                END;

                CREATE TABLE ivk_version (
                    version INTEGER NOT NULL PRIMARY KEY CHECK (version >= 1),
                    key_reference TEXT NOT NULL,
                    created_at INTEGER NOT NULL
                ) STRICT;

                CREATE TABLE handshake_attempt (
                    -- Insertion order, the tie-breaker for attempts made in the same millisecond.
                    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    tenant_id TEXT NOT NULL REFERENCES tenant(id),
                    provider TEXT NOT NULL,
                    keystore_id TEXT NOT NULL,
                    key_reference TEXT NOT NULL,
                    passed INTEGER NOT NULL CHECK (passed IN (0, 1)),
                    failure_code TEXT,
                    failure_reason TEXT,
                    at INTEGER NOT NULL
                ) STRICT;
                CREATE INDEX handshake_attempt_by_tenant ON handshake_attempt(tenant_id, at, sequence);

                -- No reference to tenant: events outlive the tenant they name (they are proof).
                -- AUTOINCREMENT so that a sequence number is never reused, even after deletes.
                CREATE TABLE outbox_event (
                    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    type TEXT NOT NULL,
                    tenant_id TEXT NOT NULL,
                    link_id TEXT,
                    payload TEXT NOT NULL CHECK (json_valid(payload)),
                    created_at INTEGER NOT NULL,
                    dispatched_at INTEGER
                ) STRICT;
                CREATE INDEX outbox_event_pending ON outbox_event(sequence) WHERE dispatched_at IS NULL;
                """)
        }
        // Regional nodes and their one-time enrolment tokens (issue 5).
        migrator.registerMigration("v2-nodes") { db in
            try db.execute(sql: """
                CREATE TABLE node (
                    id TEXT NOT NULL PRIMARY KEY,
                    region TEXT NOT NULL,
                    signing_key BLOB NOT NULL CHECK (length(signing_key) = 32),
                    hpke_key BLOB NOT NULL CHECK (length(hpke_key) = 32),
                    enrolled_at INTEGER NOT NULL,
                    last_seen_at INTEGER
                ) STRICT;
                CREATE UNIQUE INDEX node_by_signing_key ON node(signing_key);

                -- Only a hash of each token is kept; the token is shown once, when issued.
                CREATE TABLE node_enrolment (
                    id TEXT NOT NULL PRIMARY KEY,
                    token_hash BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
                    region TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    used_at INTEGER,
                    node_id TEXT REFERENCES node(id)
                ) STRICT;
                -- A token is used once.
                CREATE TRIGGER node_enrolment_used_once BEFORE UPDATE OF used_at ON node_enrolment
                WHEN OLD.used_at IS NOT NULL
                BEGIN SELECT RAISE(ABORT, 'enrolment token already used'); END;
                """)
        }
        // Signed purge acknowledgements: proof that a node dropped a link's keys (issue 5).
        migrator.registerMigration("v3-node-acks") { db in
            try db.execute(sql: """
                CREATE TABLE node_ack (
                    event_id TEXT NOT NULL REFERENCES outbox_event(id),
                    node_id TEXT NOT NULL REFERENCES node(id),
                    link_id TEXT NOT NULL,
                    keys_dropped INTEGER NOT NULL CHECK (keys_dropped >= 0),
                    statement TEXT NOT NULL CHECK (json_valid(statement)),
                    signature BLOB NOT NULL CHECK (length(signature) = 64),
                    received_at INTEGER NOT NULL,
                    PRIMARY KEY (event_id, node_id)
                ) STRICT;
                CREATE TRIGGER node_ack_final_update BEFORE UPDATE ON node_ack
                BEGIN SELECT RAISE(ABORT, 'acknowledgements are final'); END;
                CREATE TRIGGER node_ack_final_delete BEFORE DELETE ON node_ack
                BEGIN SELECT RAISE(ABORT, 'acknowledgements are final'); END;
                """)
        }
        // Administrators, their sessions and automation tokens (issue 6). Secrets are never
        // stored: passwords as bcrypt hashes, TOTP secrets sealed by the platform token,
        // session and automation tokens as SHA-256 hashes.
        migrator.registerMigration("v4-accounts") { db in
            try db.execute(sql: """
                CREATE TABLE account (
                    id TEXT NOT NULL PRIMARY KEY,
                    username TEXT NOT NULL UNIQUE,
                    role TEXT NOT NULL CHECK (role IN ('security_admin', 'auditor')),
                    -- NULL: every tenant; else a JSON array of tenant ids.
                    tenants TEXT CHECK (tenants IS NULL OR json_valid(tenants)),
                    password_hash TEXT NOT NULL CHECK (password_hash LIKE '$2%'),
                    totp_sealed BLOB NOT NULL,
                    totp_ivk_version INTEGER NOT NULL,
                    -- The last TOTP time step accepted: a code is never accepted twice.
                    totp_last_step INTEGER NOT NULL DEFAULT 0,
                    failed_logins INTEGER NOT NULL DEFAULT 0,
                    locked_until INTEGER,
                    created_at INTEGER NOT NULL,
                    created_by TEXT NOT NULL
                ) STRICT;

                CREATE TABLE admin_session (
                    token_hash BLOB NOT NULL PRIMARY KEY CHECK (length(token_hash) = 32),
                    id TEXT NOT NULL UNIQUE,
                    account_id TEXT NOT NULL REFERENCES account(id),
                    csrf_hash BLOB NOT NULL CHECK (length(csrf_hash) = 32),
                    auth_method TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    last_used_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    step_up_at INTEGER,
                    revoked_at INTEGER,
                    client_address TEXT
                ) STRICT;
                CREATE INDEX admin_session_by_account ON admin_session(account_id);

                CREATE TABLE automation_token (
                    id TEXT NOT NULL PRIMARY KEY,
                    token_hash BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
                    name TEXT NOT NULL,
                    role TEXT NOT NULL CHECK (role IN ('security_admin', 'auditor')),
                    tenants TEXT CHECK (tenants IS NULL OR json_valid(tenants)),
                    created_at INTEGER NOT NULL,
                    created_by TEXT NOT NULL,
                    expires_at INTEGER NOT NULL,
                    revoked_at INTEGER,
                    last_used_at INTEGER
                ) STRICT;
                """)
        }
        // The key lifecycle completed (issue 14): a revoked link can be restored with L1 (same
        // L2, a new epoch), a crypto-shred scheduled, cancelled and run; L1 rotation with a
        // version per binding; four-eyes approvals; rotation jobs that resume after a crash;
        // tenants that name the regions allowed to unseal; the platform operator role. SQLite
        // cannot change a CHECK in place, so the tables whose states grew are rebuilt (foreign
        // keys are off during a migration and checked at its end).
        migrator.registerMigration("v5-lifecycle") { db in
            try db.execute(sql: RegistrySchema.lifecycleTables)
            try db.execute(sql: RegistrySchema.lifecycleRules)
        }
        // Accounts can be disabled and removed; `cmk admin` actions wait here for the server to
        // put them in the audit log (the command line has no access to the log; issue 15).
        migrator.registerMigration("v6-accounts-cli-audit") { db in
            try db.execute(sql: """
                ALTER TABLE account ADD COLUMN disabled_at INTEGER;
                CREATE TABLE pending_audit (
                    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    operation TEXT NOT NULL,
                    actor TEXT NOT NULL,
                    target TEXT,
                    details TEXT NOT NULL CHECK (json_valid(details)),
                    at INTEGER NOT NULL
                ) STRICT;
                """)
        }
        // Nodes can be disabled, removed and re-keyed (issue 15). A removed node's row stays: its
        // acknowledgements are proof and refer to it.
        migrator.registerMigration("v7-node-lifecycle") { db in
            try db.execute(sql: """
                ALTER TABLE node ADD COLUMN disabled_at INTEGER;
                ALTER TABLE node ADD COLUMN removed_at INTEGER;
                ALTER TABLE node ADD COLUMN rekeyed_at INTEGER;
                CREATE TRIGGER node_removal_is_final BEFORE UPDATE ON node
                WHEN OLD.removed_at IS NOT NULL
                BEGIN SELECT RAISE(ABORT, 'a removed node is final: enrol a new one'); END;
                """)
        }
        // Applications' credentials for nodes (issue 15): the gateway signs them, nodes verify
        // them offline; only their ids and what they grant are kept, never the credential.
        migrator.registerMigration("v8-app-credentials") { db in
            try db.execute(sql: """
                CREATE TABLE app_credential (
                    id TEXT NOT NULL PRIMARY KEY,
                    name TEXT NOT NULL,
                    tenants TEXT NOT NULL CHECK (json_valid(tenants)),
                    created_at INTEGER NOT NULL,
                    created_by TEXT NOT NULL,
                    expires_at INTEGER NOT NULL CHECK (expires_at > created_at),
                    revoked_at INTEGER
                ) STRICT;
                CREATE INDEX app_credential_revoked ON app_credential(expires_at) WHERE revoked_at IS NOT NULL;
                """)
        }
        // Outstanding leases (issue 15): how long each node may still hold a tenant's key, kept
        // across a restart so that revocation progress and its exposure bound stay true.
        migrator.registerMigration("v9-node-leases") { db in
            try db.execute(sql: """
                CREATE TABLE node_lease (
                    node_id TEXT NOT NULL,
                    tenant_id TEXT NOT NULL,
                    expires_at INTEGER NOT NULL,
                    PRIMARY KEY (node_id, tenant_id)
                ) STRICT, WITHOUT ROWID;
                """)
        }
        // What several gateway replicas must share (issue 17): idempotency records, node request
        // nonces, login failures by address. Kept on SQLite too, so a restart forgets none.
        migrator.registerMigration("v10-ha") { db in
            try db.execute(sql: sqliteV10HA)
        }
        return migrator
    }

    static let lifecycleTables = """
        CREATE TABLE l1_link_v5 (
            id TEXT NOT NULL PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenant(id),
            provider TEXT NOT NULL,
            keystore_id TEXT NOT NULL,
            key_reference TEXT NOT NULL,
            -- 1 at the handshake, +1 at each rotation of L1 (to another key or key version).
            l1_version INTEGER NOT NULL CHECK (l1_version >= 1),
            state TEXT NOT NULL CHECK (state IN ('PENDING_VALIDATION', 'LINKED', 'REVOKED', 'SHRED_SCHEDULED', 'SHREDDED')),
            -- +1 at each restore: a node tells a key of the restored link from one of its revoked past.
            epoch INTEGER NOT NULL CHECK (epoch >= 1),
            last_probe_at INTEGER,
            last_probe_passed INTEGER CHECK (last_probe_passed IN (0, 1)),
            last_probe_report TEXT,
            created_at INTEGER NOT NULL,
            revoked_at INTEGER,
            restored_at INTEGER,
            shred_after INTEGER,
            shredded_at INTEGER,
            version INTEGER NOT NULL CHECK (version >= 1),
            CHECK ((state IN ('REVOKED', 'SHRED_SCHEDULED', 'SHREDDED')) = (revoked_at IS NOT NULL)),
            CHECK ((state = 'SHRED_SCHEDULED') = (shred_after IS NOT NULL)),
            CHECK ((state = 'SHREDDED') = (shredded_at IS NOT NULL)),
            UNIQUE (id, tenant_id)
        ) STRICT;
        INSERT INTO l1_link_v5 (id, tenant_id, provider, keystore_id, key_reference, l1_version, state, epoch, last_probe_at,
                                last_probe_passed, last_probe_report, created_at, revoked_at, version)
        SELECT id, tenant_id, provider, keystore_id, key_reference, 1, state, 1, last_probe_at, last_probe_passed,
               last_probe_report, created_at, revoked_at, version FROM l1_link;

        CREATE TABLE l2_key_v5 (
            id TEXT NOT NULL PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenant(id),
            link_id TEXT NOT NULL UNIQUE,
            -- L1-wrapped L2, sealed under an IVK version; NULL only once SHREDDED.
            sovereign_binding BLOB CHECK (sovereign_binding IS NULL OR length(sovereign_binding) > 0),
            sovereign_mechanism TEXT,
            sovereign_ivk_version INTEGER,
            -- The link's l1_version whose key made this binding.
            sovereign_l1_version INTEGER,
            active_binding BLOB,
            active_mechanism TEXT,
            active_ivk_version INTEGER,
            state TEXT NOT NULL CHECK (state IN ('ACTIVE', 'LOCKED', 'SHREDDED')),
            created_at INTEGER NOT NULL,
            locked_at INTEGER,
            restored_at INTEGER,
            shredded_at INTEGER,
            -- SHA-256 of the sealed sovereign binding destroyed by the shred: the proof's subject.
            shredded_binding_sha256 BLOB CHECK (shredded_binding_sha256 IS NULL OR length(shredded_binding_sha256) = 32),
            version INTEGER NOT NULL CHECK (version >= 1),
            FOREIGN KEY (link_id, tenant_id) REFERENCES l1_link(id, tenant_id),
            CHECK ((state = 'SHREDDED') = (sovereign_binding IS NULL)),
            CHECK ((sovereign_binding IS NULL) = (sovereign_mechanism IS NULL)),
            CHECK ((sovereign_binding IS NULL) = (sovereign_ivk_version IS NULL)),
            CHECK ((sovereign_binding IS NULL) = (sovereign_l1_version IS NULL)),
            -- ACTIVE has its active binding; LOCKED and SHREDDED have none (the kill-switch's point).
            CHECK ((state = 'ACTIVE') = (active_binding IS NOT NULL)),
            CHECK ((active_binding IS NULL) = (active_mechanism IS NULL)),
            CHECK ((active_binding IS NULL) = (active_ivk_version IS NULL)),
            CHECK ((state = 'ACTIVE') = (locked_at IS NULL)),
            CHECK ((state = 'SHREDDED') = (shredded_at IS NOT NULL)),
            CHECK ((state = 'SHREDDED') = (shredded_binding_sha256 IS NOT NULL))
        ) STRICT;
        INSERT INTO l2_key_v5 (id, tenant_id, link_id, sovereign_binding, sovereign_mechanism, sovereign_ivk_version,
                               sovereign_l1_version, active_binding, active_mechanism, active_ivk_version, state, created_at,
                               locked_at, version)
        SELECT id, tenant_id, link_id, sovereign_binding, sovereign_mechanism, sovereign_ivk_version, 1, active_binding,
               active_mechanism, active_ivk_version, state, created_at, locked_at, version FROM l2_key;

        DROP TABLE l2_key;
        DROP TABLE l1_link;
        ALTER TABLE l1_link_v5 RENAME TO l1_link;
        ALTER TABLE l2_key_v5 RENAME TO l2_key;

        -- Which key each L1 version of a link was (the link shows the current one).
        CREATE TABLE l1_key_version (
            link_id TEXT NOT NULL REFERENCES l1_link(id),
            version INTEGER NOT NULL CHECK (version >= 1),
            keystore_id TEXT NOT NULL,
            key_reference TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (link_id, version)
        ) STRICT;
        INSERT INTO l1_key_version (link_id, version, keystore_id, key_reference, created_at)
        SELECT id, 1, keystore_id, key_reference, created_at FROM l1_link;

        -- NULL: every region may unseal the tenant's L2; else a JSON array of region names.
        ALTER TABLE tenant ADD COLUMN allowed_regions TEXT CHECK (allowed_regions IS NULL OR json_valid(allowed_regions));

        -- The platform operator role (nodes, the IVK); rebuilt for the role CHECK.
        CREATE TABLE account_v5 (
            id TEXT NOT NULL PRIMARY KEY,
            username TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ('security_admin', 'auditor', 'platform_operator')),
            tenants TEXT CHECK (tenants IS NULL OR json_valid(tenants)),
            password_hash TEXT NOT NULL CHECK (password_hash LIKE '$2%'),
            totp_sealed BLOB NOT NULL,
            totp_ivk_version INTEGER NOT NULL,
            totp_last_step INTEGER NOT NULL DEFAULT 0,
            failed_logins INTEGER NOT NULL DEFAULT 0,
            locked_until INTEGER,
            created_at INTEGER NOT NULL,
            created_by TEXT NOT NULL
        ) STRICT;
        INSERT INTO account_v5 SELECT id, username, role, tenants, password_hash, totp_sealed, totp_ivk_version, totp_last_step,
                                      failed_logins, locked_until, created_at, created_by FROM account;
        DROP TABLE account;
        ALTER TABLE account_v5 RENAME TO account;

        CREATE TABLE automation_token_v5 (
            id TEXT NOT NULL PRIMARY KEY,
            token_hash BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
            name TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('security_admin', 'auditor', 'platform_operator')),
            tenants TEXT CHECK (tenants IS NULL OR json_valid(tenants)),
            created_at INTEGER NOT NULL,
            created_by TEXT NOT NULL,
            expires_at INTEGER NOT NULL,
            revoked_at INTEGER,
            last_used_at INTEGER
        ) STRICT;
        INSERT INTO automation_token_v5 SELECT id, token_hash, name, role, tenants, created_at, created_by, expires_at, revoked_at,
                                               last_used_at FROM automation_token;
        DROP TABLE automation_token;
        ALTER TABLE automation_token_v5 RENAME TO automation_token;

        -- Four-eyes approvals. Requests and votes are history: no reference to the tenant, and
        -- votes are final.
        CREATE TABLE approval_request (
            id TEXT NOT NULL PRIMARY KEY,
            operation TEXT NOT NULL CHECK (operation IN ('link.restore', 'link.shred', 'node.enrolment')),
            tenant_id TEXT,
            -- The link id, or the region of a node enrolment.
            target TEXT NOT NULL,
            parameters TEXT NOT NULL CHECK (json_valid(parameters)),
            reason TEXT,
            requested_by TEXT NOT NULL,
            requester_role TEXT NOT NULL,
            -- People besides the requester who must approve (M - 1 of M-of-N).
            required_approvals INTEGER NOT NULL CHECK (required_approvals BETWEEN 1 AND 8),
            state TEXT NOT NULL CHECK (state IN ('PENDING', 'APPROVED', 'REJECTED', 'CANCELLED', 'EXECUTED')),
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL CHECK (expires_at > created_at),
            decided_at INTEGER,
            executed_at INTEGER,
            executed_by TEXT,
            version INTEGER NOT NULL CHECK (version >= 1),
            CHECK ((state = 'EXECUTED') = (executed_at IS NOT NULL))
        ) STRICT;
        CREATE INDEX approval_request_by_state ON approval_request(state, created_at, id);
        CREATE INDEX approval_request_by_target ON approval_request(operation, target, state);
        CREATE TABLE approval_vote (
            request_id TEXT NOT NULL REFERENCES approval_request(id),
            approver TEXT NOT NULL,
            decision TEXT NOT NULL CHECK (decision IN ('APPROVE', 'REJECT')),
            at INTEGER NOT NULL,
            PRIMARY KEY (request_id, approver)
        ) STRICT;

        -- Rotation jobs: L1 (re-wrap sovereign bindings under a new L1 key) and IVK (re-wrap
        -- active bindings, re-seal sovereign bindings and TOTP secrets under a new IVK version),
        -- item by item in id order; each item commits with the job's cursor, so a crash resumes.
        CREATE TABLE rotation_job (
            id TEXT NOT NULL PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('l1', 'ivk')),
            keystore_id TEXT,
            from_key TEXT,
            to_keystore_id TEXT,
            to_key TEXT,
            from_ivk_version INTEGER,
            to_ivk_version INTEGER,
            state TEXT NOT NULL CHECK (state IN ('RUNNING', 'COMPLETED')),
            total INTEGER NOT NULL CHECK (total >= 0),
            done INTEGER NOT NULL DEFAULT 0 CHECK (done >= 0),
            failed INTEGER NOT NULL DEFAULT 0 CHECK (failed >= 0),
            -- The last item handled (a link id, an L2 ref or an account id, by phase).
            phase TEXT NOT NULL DEFAULT '',
            cursor TEXT NOT NULL DEFAULT '',
            requested_by TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            finished_at INTEGER,
            CHECK ((state = 'COMPLETED') = (finished_at IS NOT NULL)),
            CHECK ((kind = 'l1') = (from_key IS NOT NULL AND to_key IS NOT NULL AND keystore_id IS NOT NULL AND to_keystore_id IS NOT NULL)),
            CHECK ((kind = 'ivk') = (from_ivk_version IS NOT NULL AND to_ivk_version IS NOT NULL))
        ) STRICT;
        CREATE INDEX rotation_job_running ON rotation_job(created_at, id) WHERE state = 'RUNNING';
        CREATE TABLE rotation_failure (
            job_id TEXT NOT NULL REFERENCES rotation_job(id),
            item TEXT NOT NULL,
            code TEXT NOT NULL,
            reason TEXT NOT NULL,
            at INTEGER NOT NULL,
            PRIMARY KEY (job_id, item)
        ) STRICT;
        """

    /// The rules of the lifecycle, in the schema as well as in Swift (RegistrySchema's convention).
    static let lifecycleRules = """
        -- One live link per tenant. A revoked (restorable) link does not stop the index, but the
        -- insert trigger below does: the way back from REVOKED is a restore, not a new L2.
        CREATE UNIQUE INDEX l1_link_one_live_per_tenant ON l1_link(tenant_id) WHERE state IN ('PENDING_VALIDATION', 'LINKED');
        CREATE INDEX l1_link_by_tenant ON l1_link(tenant_id, created_at, id);
        CREATE INDEX l1_link_by_state ON l1_link(state, created_at, id);
        CREATE INDEX l1_link_by_key ON l1_link(keystore_id, key_reference, id);
        CREATE INDEX l1_link_shred_due ON l1_link(shred_after) WHERE state = 'SHRED_SCHEDULED';
        CREATE INDEX l2_key_by_tenant ON l2_key(tenant_id, created_at, id);

        CREATE TRIGGER l1_link_transitions
        BEFORE UPDATE OF state ON l1_link
        WHEN OLD.state <> NEW.state AND NOT (
            (OLD.state = 'PENDING_VALIDATION' AND NEW.state IN ('LINKED', 'REVOKED'))
            OR (OLD.state = 'LINKED' AND NEW.state = 'REVOKED')
            OR (OLD.state = 'REVOKED' AND NEW.state IN ('LINKED', 'SHRED_SCHEDULED'))
            OR (OLD.state = 'SHRED_SCHEDULED' AND NEW.state IN ('REVOKED', 'SHREDDED')))
        BEGIN
            SELECT RAISE(ABORT, 'this change of link state is not allowed: SHREDDED is final, and only a REVOKED link is restored');
        END;
        CREATE TRIGGER l1_link_restore_starts_an_epoch
        BEFORE UPDATE OF state ON l1_link
        WHEN OLD.state = 'REVOKED' AND NEW.state = 'LINKED' AND NEW.epoch <> OLD.epoch + 1
        BEGIN
            SELECT RAISE(ABORT, 'a restored link starts a new epoch');
        END;
        CREATE TRIGGER l1_link_epoch_never_goes_back
        BEFORE UPDATE OF epoch ON l1_link
        WHEN NEW.epoch < OLD.epoch
        BEGIN
            SELECT RAISE(ABORT, 'a link epoch never goes back');
        END;
        CREATE TRIGGER l1_link_l1_version_never_goes_back
        BEFORE UPDATE OF l1_version ON l1_link
        WHEN NEW.l1_version < OLD.l1_version
        BEGIN
            SELECT RAISE(ABORT, 'an L1 version never goes back');
        END;
        -- The kill-switch's invariant: a link that is not live never has an ACTIVE L2. The lock
        -- comes first (in the same transaction), so the revocation can check it.
        CREATE TRIGGER l1_link_revocation_needs_locked_l2
        BEFORE UPDATE OF state ON l1_link
        WHEN NEW.state IN ('REVOKED', 'SHRED_SCHEDULED', 'SHREDDED')
             AND EXISTS (SELECT 1 FROM l2_key WHERE link_id = NEW.id AND state = 'ACTIVE')
        BEGIN
            SELECT RAISE(ABORT, 'lock the link''s L2 key before revoking the link');
        END;
        CREATE TRIGGER l1_link_shred_needs_shredded_l2
        BEFORE UPDATE OF state ON l1_link
        WHEN NEW.state = 'SHREDDED' AND EXISTS (SELECT 1 FROM l2_key WHERE link_id = NEW.id AND state <> 'SHREDDED')
        BEGIN
            SELECT RAISE(ABORT, 'shred the link''s L2 key before marking the link shredded');
        END;
        CREATE TRIGGER l1_link_no_new_link_while_restorable
        BEFORE INSERT ON l1_link
        WHEN EXISTS (SELECT 1 FROM l1_link WHERE tenant_id = NEW.tenant_id AND state IN ('REVOKED', 'SHRED_SCHEDULED'))
        BEGIN
            SELECT RAISE(ABORT, 'the tenant has a revoked link that can be restored: restore it, or shred it first');
        END;

        CREATE TRIGGER l2_key_transitions
        BEFORE UPDATE OF state ON l2_key
        WHEN OLD.state <> NEW.state AND NOT (
            (OLD.state = 'ACTIVE' AND NEW.state = 'LOCKED')
            OR (OLD.state = 'LOCKED' AND NEW.state IN ('ACTIVE', 'SHREDDED')))
        BEGIN
            SELECT RAISE(ABORT, 'this change of L2 state is not allowed: SHREDDED is final');
        END;
        CREATE TRIGGER l2_key_active_needs_linked_link
        BEFORE UPDATE OF state ON l2_key
        WHEN NEW.state = 'ACTIVE' AND OLD.state <> 'ACTIVE'
             AND NOT EXISTS (SELECT 1 FROM l1_link WHERE id = NEW.link_id AND state = 'LINKED')
        BEGIN
            SELECT RAISE(ABORT, 'an L2 key becomes active again only with its link restored');
        END;
        CREATE TRIGGER l2_key_insert_active_needs_linked_link
        BEFORE INSERT ON l2_key
        WHEN NEW.state = 'ACTIVE' AND NOT EXISTS (SELECT 1 FROM l1_link WHERE id = NEW.link_id AND state = 'LINKED')
        BEGIN
            SELECT RAISE(ABORT, 'an L2 key of a link that is not linked cannot be active');
        END;
        -- Once shredded, nothing comes back: no binding is ever written again.
        CREATE TRIGGER l2_key_shredded_is_final
        BEFORE UPDATE ON l2_key
        WHEN OLD.state = 'SHREDDED'
        BEGIN
            SELECT RAISE(ABORT, 'a shredded L2 key is final');
        END;

        CREATE TRIGGER approval_request_transitions
        BEFORE UPDATE OF state ON approval_request
        WHEN OLD.state <> NEW.state AND NOT (
            (OLD.state = 'PENDING' AND NEW.state IN ('APPROVED', 'REJECTED', 'CANCELLED'))
            OR (OLD.state = 'APPROVED' AND NEW.state IN ('EXECUTED', 'CANCELLED')))
        BEGIN
            SELECT RAISE(ABORT, 'this change of approval state is not allowed');
        END;
        CREATE TRIGGER approval_vote_not_by_the_requester
        BEFORE INSERT ON approval_vote
        WHEN NEW.approver = (SELECT requested_by FROM approval_request WHERE id = NEW.request_id)
        BEGIN
            SELECT RAISE(ABORT, 'the requester cannot approve or reject their own request');
        END;
        CREATE TRIGGER approval_vote_final_update BEFORE UPDATE ON approval_vote
        BEGIN SELECT RAISE(ABORT, 'votes are final'); END;
        CREATE TRIGGER approval_vote_final_delete BEFORE DELETE ON approval_vote
        BEGIN SELECT RAISE(ABORT, 'votes are final'); END;
        """
}
