DROP TABLE app_checkpoints;
DROP TABLE bad_records;
DROP TABLE app_logs;
DROP TABLE app_status;
DROP TABLE app_leases;
DROP TABLE app_versions;
DROP TABLE apps;
