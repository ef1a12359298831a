-- How far into its input an app's status (records_in, bad records, logs) is counted: a replay
-- after a crash or restart does not count the same records again.
CREATE TABLE app_input_progress (
    app_id      UUID NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (app_id, topic, partition)
);

-- A bad record's key and value are kept cut to a size; these are their sizes in full.
ALTER TABLE bad_records ADD COLUMN key_size INTEGER, ADD COLUMN value_size INTEGER;

-- Retention by age sweeps these.
CREATE INDEX app_logs_by_age ON app_logs (at);
CREATE INDEX bad_records_by_age ON bad_records (at);
