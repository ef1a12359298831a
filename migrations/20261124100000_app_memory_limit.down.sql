ALTER TABLE apps DROP COLUMN memory_limit_mib;
