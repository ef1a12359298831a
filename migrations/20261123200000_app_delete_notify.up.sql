-- Deleting an app notifies too (the gateway ends its streams; nodes stop it at once).
CREATE FUNCTION notify_app_deleted() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('aerogrid_apps', OLD.id::text);
    RETURN OLD;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER apps_notify_deleted
    AFTER DELETE ON apps
    FOR EACH ROW EXECUTE FUNCTION notify_app_deleted();
