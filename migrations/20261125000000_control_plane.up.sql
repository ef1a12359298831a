-- The control plane: token scopes, CSRF secrets of sessions, restarts, version notes, and the
-- team's audit log.

-- What a token may do: `read` reads apps and grids only; `manage` acts as its user's role.
ALTER TABLE api_tokens
    ADD COLUMN scope TEXT NOT NULL DEFAULT 'manage' CHECK (scope IN ('read', 'manage')),
    ADD COLUMN last_used_at TIMESTAMPTZ;

-- Cookie-authenticated writes must echo this value in `X-CSRF-Token` (a page of another origin
-- cannot read it).
ALTER TABLE sessions ADD COLUMN csrf_token TEXT NOT NULL DEFAULT '';

-- Start and Restart bump it: a node running the app with an older value restarts it (a failed
-- app that is started again, or a Restart, runs anew).
ALTER TABLE apps
    ADD COLUMN start_generation BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();

-- Where a version came from (a save, a rollback to version N, the template it was created from).
ALTER TABLE app_versions ADD COLUMN note TEXT;

DROP TRIGGER apps_notify_desired_state ON apps;
CREATE TRIGGER apps_notify_desired_state
    AFTER INSERT OR UPDATE OF desired_state, run_version, start_generation ON apps
    FOR EACH ROW EXECUTE FUNCTION notify_app_desired_state();

-- Who did what in a team, newest last. Kept when the actor or the app is deleted.
CREATE TABLE audit_events (
    id         BIGSERIAL PRIMARY KEY,
    team_id    UUID NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    actor_id   UUID REFERENCES users (id) ON DELETE SET NULL,
    actor_name TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    detail     JSONB NOT NULL DEFAULT '{}',
    at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_by_team ON audit_events (team_id, id);

CREATE INDEX api_tokens_by_user ON api_tokens (user_id);
