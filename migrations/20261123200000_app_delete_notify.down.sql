DROP TRIGGER apps_notify_deleted ON apps;
CREATE OR REPLACE FUNCTION notify_app_desired_state() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('aerogrid_apps', NEW.id::text);
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
