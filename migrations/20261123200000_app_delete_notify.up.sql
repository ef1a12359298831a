-- Deleting an app notifies too (the gateway ends its streams; nodes stop it at once): the one
-- notify function now takes the row from OLD when there is no NEW.
CREATE OR REPLACE FUNCTION notify_app_desired_state() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('aerogrid_apps', (CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END)::text);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER apps_notify_deleted
    AFTER DELETE ON apps
    FOR EACH ROW EXECUTE FUNCTION notify_app_desired_state();
