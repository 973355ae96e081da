import GRDB

/// The Registry's schema, as named migrations. Applied migrations are recorded in
/// `grdb_migrations`, so opening a file again runs only what is new. Never edit a shipped
/// migration: add "v2", "v3", ….
///
/// Conventions: STRICT tables (SQLite checks the declared types); instants are INTEGER
/// milliseconds since the Unix epoch, UTC (see `Date+Registry.swift`); booleans are INTEGER
/// 0/1, SQLite's native form; blobs are BLOB. The business rules the Swift code checks inside
/// each transaction are also in the schema, so a bug or a second process cannot break them.
enum RegistrySchema {
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
        return migrator
    }
}
