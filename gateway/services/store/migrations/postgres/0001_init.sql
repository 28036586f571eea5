-- 0001: the initial state store schema (PostgreSQL).
-- Times are UNIX seconds (DOUBLE PRECISION), JSON is JSONB, secrets are sealed BYTEA.

CREATE TABLE sessions (
    sid_hash   TEXT PRIMARY KEY,
    username   TEXT,
    data       JSONB NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    last_seen  DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX sessions_username ON sessions (username);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE login_failures (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject TEXT NOT NULL,
    at      DOUBLE PRECISION NOT NULL
);
CREATE INDEX login_failures_subject_at ON login_failures (subject, at);
CREATE INDEX login_failures_at ON login_failures (at);

CREATE TABLE login_bans (
    subject TEXT PRIMARY KEY,
    until   DOUBLE PRECISION NOT NULL
);

CREATE TABLE audit_heads (
    chain TEXT PRIMARY KEY,
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL,
    at    DOUBLE PRECISION NOT NULL
);

CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    algorithm      TEXT NOT NULL,
    sealed_private BYTEA NOT NULL,
    public_jwk     JSONB NOT NULL,
    created_at     DOUBLE PRECISION NOT NULL,
    retired_at     DOUBLE PRECISION
);

CREATE TABLE totp (
    username      TEXT PRIMARY KEY,
    sealed_secret BYTEA NOT NULL,
    enrolled_at   DOUBLE PRECISION NOT NULL,
    last_step     BIGINT NOT NULL DEFAULT -1
);

CREATE TABLE recovery_codes (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username   TEXT NOT NULL,
    code_hash  TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    used_at    DOUBLE PRECISION
);
CREATE INDEX recovery_codes_username ON recovery_codes (username);

CREATE TABLE passwords (
    username    TEXT PRIMARY KEY,
    hash        TEXT,
    base_hash   TEXT,
    changed_at  DOUBLE PRECISION,
    must_change BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE password_history (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username   TEXT NOT NULL,
    hash       TEXT NOT NULL,
    changed_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX password_history_username ON password_history (username, changed_at);

CREATE TABLE password_seen (
    username   TEXT NOT NULL,
    base_hash  TEXT NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (username, base_hash)
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
