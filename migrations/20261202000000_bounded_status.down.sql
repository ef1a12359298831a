DROP INDEX bad_records_by_age;
DROP INDEX app_logs_by_age;
ALTER TABLE bad_records DROP COLUMN value_size, DROP COLUMN key_size;
DROP TABLE app_input_progress;
