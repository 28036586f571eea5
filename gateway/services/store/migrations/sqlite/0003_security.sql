-- 0003: sign-in history, requests per user and hour, security incidents, trusted login IPs
-- (SQLite).

CREATE TABLE sign_ins (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    username     TEXT NOT NULL,
    result       TEXT NOT NULL,
    ip           TEXT,
    country      TEXT,
    geoip_source TEXT,
    user_agent   TEXT NOT NULL DEFAULT '',
    at           REAL NOT NULL
);
CREATE INDEX sign_ins_username_at ON sign_ins (username, at);
CREATE INDEX sign_ins_at ON sign_ins (at);

-- One row per user and hour (hour = floor(UNIX time / 3600)); workers add their counts.
CREATE TABLE request_counts (
    username TEXT NOT NULL,
    hour     INTEGER NOT NULL,
    count    INTEGER NOT NULL,
    PRIMARY KEY (username, hour)
);
CREATE INDEX request_counts_hour ON request_counts (hour);

CREATE TABLE incidents (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    username        TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    countries       TEXT NOT NULL,
    opened_at       REAL NOT NULL,
    updated_at      REAL NOT NULL,
    acknowledged_at REAL,
    acknowledged_by TEXT,
    resolved_at     REAL,
    resolved_by     TEXT,
    note            TEXT
);
-- At most one incident per user that is not resolved: what makes opening one atomic across
-- processes (INSERT ... ON CONFLICT DO NOTHING against this index).
CREATE UNIQUE INDEX incidents_one_active_per_user ON incidents (username)
    WHERE state <> 'resolved';
CREATE INDEX incidents_state_opened ON incidents (state, opened_at);

-- The sign-ins that caused or extended an incident: copies, so the evidence outlives the
-- login history's shorter retention.
CREATE TABLE incident_sign_ins (
    incident_id  INTEGER NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    sign_in_id   INTEGER NOT NULL,
    username     TEXT NOT NULL,
    result       TEXT NOT NULL,
    ip           TEXT,
    country      TEXT,
    geoip_source TEXT,
    user_agent   TEXT NOT NULL,
    at           REAL NOT NULL,
    PRIMARY KEY (incident_id, sign_in_id)
);

CREATE TABLE trusted_ips (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    cidr        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at  REAL NOT NULL,
    created_by  TEXT NOT NULL,
    UNIQUE (scope, cidr)
);
