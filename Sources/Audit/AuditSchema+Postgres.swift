import Storage

/// The audit log's schema in PostgreSQL's dialect (15 and later), as `PostgresMigration`s.
///
/// "v1" is SQLite's "v1" (`AuditSchema.migrator`) with the conventions of the Registry's
/// PostgreSQL schema (`RegistrySchema.postgres`): INTEGER is BIGINT, BLOB is BYTEA and
/// `length(blob)` is `octet_length(blob)`; the same tables, keys and indexes. Retention: each
/// table refuses UPDATE and DELETE (a row trigger per SQLite trigger, a plpgsql function of the
/// same name, the same message, SQLSTATE P0001) and, in PostgreSQL only, TRUNCATE.
///
/// "v2-head" is SQLite's "v2-head": `audit_head`, the one mutable row (the committed tree's size,
/// chain value, last time and frontier) every batch continues from, so that appenders in several
/// processes make one chain. It has no append-only trigger.
///
/// Every element is exactly one statement, and none contains `?`.
enum AuditSchema {
    static let postgres: [PostgresMigration] = [
        PostgresMigration("v1", [
            """
            CREATE TABLE audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)
            """,
            """
            CREATE TABLE audit_record (
                seq BIGINT PRIMARY KEY,
                time BIGINT NOT NULL,
                tenant TEXT,
                key_ref TEXT,
                actor TEXT NOT NULL,
                operation TEXT NOT NULL,
                outcome TEXT NOT NULL,
                body BYTEA NOT NULL,
                leaf BYTEA NOT NULL CHECK (octet_length(leaf) = 32),
                chain BYTEA NOT NULL CHECK (octet_length(chain) = 32)
            )
            """,
            // The filter columns again, indexed in bulk behind the log (see `AuditStore.index`).
            """
            CREATE TABLE audit_filter (
                seq BIGINT PRIMARY KEY,
                time BIGINT NOT NULL,
                tenant TEXT,
                key_ref TEXT,
                actor TEXT NOT NULL,
                operation TEXT NOT NULL,
                outcome TEXT NOT NULL
            )
            """,
            """
            CREATE INDEX audit_filter_tenant ON audit_filter (tenant, seq)
            """,
            """
            CREATE INDEX audit_filter_key ON audit_filter (key_ref, seq)
            """,
            """
            CREATE INDEX audit_filter_actor ON audit_filter (actor, seq)
            """,
            """
            CREATE INDEX audit_filter_operation ON audit_filter (operation, seq)
            """,
            """
            CREATE INDEX audit_filter_time ON audit_filter (time)
            """,
            """
            CREATE TABLE audit_node (
                level BIGINT NOT NULL,
                idx BIGINT NOT NULL,
                hash BYTEA NOT NULL CHECK (octet_length(hash) = 32),
                PRIMARY KEY (level, idx)
            )
            """,
            """
            CREATE TABLE audit_checkpoint (
                size BIGINT PRIMARY KEY,
                time BIGINT NOT NULL,
                root BYTEA NOT NULL,
                note TEXT NOT NULL
            )
            """,
            // Retention: the service never changes or removes what it has written.
            """
            CREATE FUNCTION audit_meta_no_update() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log is append-only';
            END;
            $$
            """,
            """
            CREATE TRIGGER audit_meta_no_update BEFORE UPDATE ON audit_meta
            FOR EACH ROW EXECUTE FUNCTION audit_meta_no_update()
            """,
            """
            CREATE FUNCTION audit_meta_no_delete() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log is append-only';
            END;
            $$
            """,
            """
            CREATE TRIGGER audit_meta_no_delete BEFORE DELETE ON audit_meta
            FOR EACH ROW EXECUTE FUNCTION audit_meta_no_delete()
            """,
            """
            CREATE FUNCTION audit_meta_no_truncate() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log is append-only';
            END;
            $$
            """,
            """
            CREATE TRIGGER audit_meta_no_truncate BEFORE TRUNCATE ON audit_meta
            FOR EACH STATEMENT EXECUTE FUNCTION audit_meta_no_truncate()
            """,
            """
            CREATE FUNCTION audit_record_no_update() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log is append-only';
            END;
            $$
            """,
            """
            CREATE TRIGGER audit_record_no_update BEFORE UPDATE ON audit_record
            FOR EACH ROW EXECUTE FUNCTION audit_record_no_update()
            """,
            """
            CREATE FUNCTION audit_record_no_delete() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log is append-only';
            END;
            $$
            """,
            """
            CREATE TRIGGER audit_record_no_delete BEFORE DELETE ON audit_record
            FOR EACH ROW EXECUTE FUNCTION audit_record_no_delete()
            """,
            """
            CREATE FUNCTION audit_record_no_truncate() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log is append-only';
            END;
            $$
            """,
            """
            CREATE TRIGGER audit_record_no_truncate BEFORE TRUNCATE ON audit_record
            FOR EACH STATEMENT EXECUTE FUNCTION audit_record_no_truncate()
            """,
            """
            CREATE FUNCTION audit_node_no_update() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log is append-only';
            END;
            $$
            """,
            """
            CREATE TRIGGER audit_node_no_update BEFORE UPDATE ON audit_node
            FOR EACH ROW EXECUTE FUNCTION audit_node_no_update()
            """,
            """
            CREATE FUNCTION audit_node_no_delete() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log is append-only';
            END;
            $$
            """,
            """
            CREATE TRIGGER audit_node_no_delete BEFORE DELETE ON audit_node
            FOR EACH ROW EXECUTE FUNCTION audit_node_no_delete()
            """,
            """
            CREATE FUNCTION audit_node_no_truncate() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log is append-only';
            END;
            $$
            """,
            """
            CREATE TRIGGER audit_node_no_truncate BEFORE TRUNCATE ON audit_node
            FOR EACH STATEMENT EXECUTE FUNCTION audit_node_no_truncate()
            """,
            """
            CREATE FUNCTION audit_checkpoint_no_update() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log is append-only';
            END;
            $$
            """,
            """
            CREATE TRIGGER audit_checkpoint_no_update BEFORE UPDATE ON audit_checkpoint
            FOR EACH ROW EXECUTE FUNCTION audit_checkpoint_no_update()
            """,
            """
            CREATE FUNCTION audit_checkpoint_no_delete() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log is append-only';
            END;
            $$
            """,
            """
            CREATE TRIGGER audit_checkpoint_no_delete BEFORE DELETE ON audit_checkpoint
            FOR EACH ROW EXECUTE FUNCTION audit_checkpoint_no_delete()
            """,
            """
            CREATE FUNCTION audit_checkpoint_no_truncate() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log is append-only';
            END;
            $$
            """,
            """
            CREATE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON audit_checkpoint
            FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoint_no_truncate()
            """,
            """
            CREATE FUNCTION audit_filter_no_update() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log is append-only';
            END;
            $$
            """,
            """
            CREATE TRIGGER audit_filter_no_update BEFORE UPDATE ON audit_filter
            FOR EACH ROW EXECUTE FUNCTION audit_filter_no_update()
            """,
            """
            CREATE FUNCTION audit_filter_no_delete() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log is append-only';
            END;
            $$
            """,
            """
            CREATE TRIGGER audit_filter_no_delete BEFORE DELETE ON audit_filter
            FOR EACH ROW EXECUTE FUNCTION audit_filter_no_delete()
            """,
            """
            CREATE FUNCTION audit_filter_no_truncate() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the audit log is append-only';
            END;
            $$
            """,
            """
            CREATE TRIGGER audit_filter_no_truncate BEFORE TRUNCATE ON audit_filter
            FOR EACH STATEMENT EXECUTE FUNCTION audit_filter_no_truncate()
            """,
        ]),
        PostgresMigration("v2-head", [
            """
            CREATE TABLE audit_head (
                id BIGINT PRIMARY KEY CHECK (id = 1),
                size BIGINT NOT NULL CHECK (size >= 0),
                chain BYTEA NOT NULL CHECK (octet_length(chain) = 32),
                last_time BIGINT NOT NULL,
                frontier BYTEA NOT NULL CHECK (octet_length(frontier) % 32 = 0)
            )
            """,
        ]),
    ]
}
