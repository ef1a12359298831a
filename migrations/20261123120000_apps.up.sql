-- Apps, their saved versions, and what the runtime reports about them.

CREATE TABLE apps (
    id            UUID PRIMARY KEY,
    team_id       UUID NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    -- What the user asked for; runtime nodes converge on it.
    desired_state TEXT NOT NULL DEFAULT 'stopped' CHECK (desired_state IN ('running', 'stopped')),
    -- The version Start runs (NULL: the latest).
    run_version   INTEGER,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (team_id, name)
);

CREATE TABLE app_versions (
    app_id     UUID NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    version    INTEGER NOT NULL,
    code       TEXT NOT NULL,
    created_by UUID REFERENCES users (id) ON DELETE SET NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, version)
);

-- Which runtime node runs an app; a node renews its lease while it runs it, and another node
-- takes over an app whose lease expired.
CREATE TABLE app_leases (
    app_id     UUID PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    node_id    TEXT NOT NULL,
    -- Grows with every takeover: the changelog ignores writes of older epochs.
    epoch      BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE app_status (
    app_id         UUID PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    state          TEXT NOT NULL CHECK (state IN ('stopped', 'starting', 'waiting', 'running', 'failed')),
    -- Why it failed or waits, in words for the user; the line of their code when known.
    error          TEXT,
    error_line     INTEGER,
    version        INTEGER,
    restarts       INTEGER NOT NULL DEFAULT 0,
    records_in     BIGINT NOT NULL DEFAULT 0,
    bad_records    BIGINT NOT NULL DEFAULT 0,
    lag            BIGINT,
    since          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE app_logs (
    id      BIGSERIAL PRIMARY KEY,
    app_id  UUID NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    level   TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX app_logs_by_app ON app_logs (app_id, id);

CREATE TABLE bad_records (
    id          BIGSERIAL PRIMARY KEY,
    app_id      UUID NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    "offset"    BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    line        INTEGER,
    key         BYTEA,
    value       BYTEA
);
CREATE INDEX bad_records_by_app ON bad_records (app_id, id);

-- Where an app's grids are kept: its changelog topic, and the changelog offset of the first part
-- of its latest complete snapshot (recovery reads from there).
CREATE TABLE app_checkpoints (
    app_id          UUID PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    changelog_topic TEXT NOT NULL,
    snapshot_offset BIGINT NOT NULL DEFAULT 0
);
