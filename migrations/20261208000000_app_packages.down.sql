ALTER TABLE app_status DROP COLUMN progress;
ALTER TABLE app_versions DROP COLUMN lock_error_line, DROP COLUMN lock_error, DROP COLUMN lock, DROP COLUMN requirements;
