DROP TABLE audit_events;
DROP INDEX api_tokens_by_user;
DROP TRIGGER apps_notify_desired_state ON apps;
CREATE TRIGGER apps_notify_desired_state
    AFTER INSERT OR UPDATE OF desired_state, run_version ON apps
    FOR EACH ROW EXECUTE FUNCTION notify_app_desired_state();
ALTER TABLE app_versions DROP COLUMN note;
ALTER TABLE apps DROP COLUMN start_generation, DROP COLUMN updated_at;
ALTER TABLE sessions DROP COLUMN csrf_token;
ALTER TABLE api_tokens DROP COLUMN scope, DROP COLUMN last_used_at;
