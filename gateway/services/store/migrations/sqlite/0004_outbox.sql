-- 0004: the notification outbox and the system messages in force (SQLite).

CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL,
    coalesce_key  TEXT,
    dedupe_key    TEXT UNIQUE,
    recipients    TEXT NOT NULL,
    payload       TEXT NOT NULL,
    created_at    REAL NOT NULL,
    not_before    REAL NOT NULL,
    state         TEXT NOT NULL DEFAULT 'pending',
    attempts      INTEGER NOT NULL DEFAULT 0,
    lease_owner   TEXT,
    lease_until   REAL,
    message_id    TEXT,
    last_error    TEXT,
    done_at       REAL
);
CREATE INDEX outbox_due ON outbox (state, not_before);
CREATE INDEX outbox_coalesce ON outbox (coalesce_key, not_before);

CREATE TABLE system_messages (
    key   TEXT PRIMARY KEY,
    text  TEXT NOT NULL,
    since REAL NOT NULL
);
