DROP TRIGGER users_access ON users;
DROP TRIGGER sessions_access ON sessions;
DROP TRIGGER topic_grants_access ON topic_grants;
DROP TRIGGER grid_shares_access ON grid_shares;
DROP TRIGGER team_members_access ON team_members;
DROP TRIGGER api_tokens_access ON api_tokens;
DROP FUNCTION notify_access_changed();
ALTER TABLE teams
    DROP COLUMN max_apps, DROP COLUMN max_running_apps,
    DROP COLUMN max_app_memory_mib, DROP COLUMN max_total_memory_mib;
DROP TABLE app_topics;
DROP TABLE topic_grants;
