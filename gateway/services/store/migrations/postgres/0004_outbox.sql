-- 0004: the notification outbox and the system messages in force (PostgreSQL).

CREATE TABLE outbox (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          TEXT NOT NULL,
    coalesce_key  TEXT,
    dedupe_key    TEXT UNIQUE,
    recipients    JSONB NOT NULL,
    payload       JSONB NOT NULL,
    created_at    DOUBLE PRECISION NOT NULL,
    not_before    DOUBLE PRECISION NOT NULL,
    state         TEXT NOT NULL DEFAULT 'pending',
    attempts      INTEGER NOT NULL DEFAULT 0,
    lease_owner   TEXT,
    lease_until   DOUBLE PRECISION,
    message_id    TEXT,
    last_error    TEXT,
    done_at       DOUBLE PRECISION
);
CREATE INDEX outbox_due ON outbox (state, not_before);
CREATE INDEX outbox_coalesce ON outbox (coalesce_key, not_before);

CREATE TABLE system_messages (
    key   TEXT PRIMARY KEY,
    text  TEXT NOT NULL,
    since DOUBLE PRECISION NOT NULL
);
