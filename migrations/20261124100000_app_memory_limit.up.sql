-- An app's own memory limit for its connector process (NULL: the runtime node's default).
ALTER TABLE apps ADD COLUMN memory_limit_mib INTEGER CHECK (memory_limit_mib > 0);
