-- Runtime nodes LISTEN on `aerogrid_apps`: a Start or Stop reaches them at once (at commit)
-- instead of at their next poll. The payload is the app's id.
CREATE FUNCTION notify_app_desired_state() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('aerogrid_apps', NEW.id::text);
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER apps_notify_desired_state
    AFTER INSERT OR UPDATE OF desired_state, run_version ON apps
    FOR EACH ROW EXECUTE FUNCTION notify_app_desired_state();
