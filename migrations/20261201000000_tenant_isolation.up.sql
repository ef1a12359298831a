-- Tenant isolation: the Kafka topics each team may read, the topics each app reads, quotas per
-- team, and a notification whenever someone's access shrinks.

-- Topics a team may read beyond its own namespace `<team>.*`: a topic name, or a prefix ending
-- in `*`. Platform topics (`aerogrid.*`) are never granted (checked by `aerogrid-policy`).
CREATE TABLE topic_grants (
    team_id    UUID NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    pattern    TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, pattern)
);

-- The input topics of an app's loaded version, as its connector declared them (written by the
-- runtime node beside `app_grids`): the gateway ends the streams of an app that reads a topic
-- its team may no longer read.
CREATE TABLE app_topics (
    app_id UUID NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    topic  TEXT NOT NULL,
    PRIMARY KEY (app_id, topic)
);

-- Quotas of a team, set by administrators; NULL: the server's default (`aerogrid server --help`).
ALTER TABLE teams
    ADD COLUMN max_apps             INTEGER CHECK (max_apps >= 0),
    ADD COLUMN max_running_apps     INTEGER CHECK (max_running_apps >= 0),
    ADD COLUMN max_app_memory_mib   INTEGER CHECK (max_app_memory_mib > 0),
    ADD COLUMN max_total_memory_mib INTEGER CHECK (max_total_memory_mib > 0);

-- Streams (gRPC, gRPC-web, SSE) check access for their whole life: whenever a token is revoked,
-- a member leaves or changes role, a share or a grant is withdrawn, a session ends or an admin
-- is demoted, servers re-check their open streams and runtime nodes their apps' topics. The
-- payload names the table.
CREATE FUNCTION notify_access_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('aerogrid_access', TG_TABLE_NAME);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER api_tokens_access AFTER UPDATE OF revoked_at OR DELETE ON api_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION notify_access_changed();
CREATE TRIGGER team_members_access AFTER UPDATE OR DELETE ON team_members
    FOR EACH STATEMENT EXECUTE FUNCTION notify_access_changed();
CREATE TRIGGER grid_shares_access AFTER DELETE ON grid_shares
    FOR EACH STATEMENT EXECUTE FUNCTION notify_access_changed();
CREATE TRIGGER topic_grants_access AFTER DELETE ON topic_grants
    FOR EACH STATEMENT EXECUTE FUNCTION notify_access_changed();
CREATE TRIGGER sessions_access AFTER DELETE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION notify_access_changed();
CREATE TRIGGER users_access AFTER UPDATE OF is_admin OR DELETE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION notify_access_changed();
