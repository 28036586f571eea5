-- 0001: the initial state store schema (SQLite).
-- Times are UNIX seconds (REAL); JSON is TEXT; booleans are INTEGER 0/1.

CREATE TABLE sessions (
    sid_hash   TEXT PRIMARY KEY,
    username   TEXT,
    data       TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_seen  REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX sessions_username ON sessions (username);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE login_failures (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    at      REAL NOT NULL
);
CREATE INDEX login_failures_subject_at ON login_failures (subject, at);
CREATE INDEX login_failures_at ON login_failures (at);

CREATE TABLE login_bans (
    subject TEXT PRIMARY KEY,
    until   REAL NOT NULL
);

CREATE TABLE audit_heads (
    chain TEXT PRIMARY KEY,
    seq   INTEGER NOT NULL,
    hash  TEXT NOT NULL,
    at    REAL NOT NULL
);

CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    algorithm      TEXT NOT NULL,
    sealed_private BLOB NOT NULL,
    public_jwk     TEXT NOT NULL,
    created_at     REAL NOT NULL,
    retired_at     REAL
);

CREATE TABLE totp (
    username      TEXT PRIMARY KEY,
    sealed_secret BLOB NOT NULL,
    enrolled_at   REAL NOT NULL,
    last_step     INTEGER NOT NULL DEFAULT -1
);

CREATE TABLE recovery_codes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    username   TEXT NOT NULL,
    code_hash  TEXT NOT NULL,
    created_at REAL NOT NULL,
    used_at    REAL
);
CREATE INDEX recovery_codes_username ON recovery_codes (username);

CREATE TABLE passwords (
    username    TEXT PRIMARY KEY,
    hash        TEXT,
    base_hash   TEXT,
    changed_at  REAL,
    must_change INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE password_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    username   TEXT NOT NULL,
    hash       TEXT NOT NULL,
    changed_at REAL NOT NULL
);
CREATE INDEX password_history_username ON password_history (username, changed_at);

CREATE TABLE password_seen (
    username   TEXT NOT NULL,
    base_hash  TEXT NOT NULL,
    first_seen REAL NOT NULL,
    PRIMARY KEY (username, base_hash)
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
