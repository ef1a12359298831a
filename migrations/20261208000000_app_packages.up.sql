-- Python packages per app version: what the user declared (pip's requirements format) and what
-- it resolved to (exact versions and hashes; NULL until resolved, e.g. while the index could
-- not be reached).
ALTER TABLE app_versions
    ADD COLUMN requirements TEXT NOT NULL DEFAULT '',
    ADD COLUMN lock TEXT;

-- What a starting app is doing (installing its packages: what, how far).
ALTER TABLE app_status ADD COLUMN progress TEXT;

-- Why the requirements cannot be resolved, when that is the user's to fix (an unknown package,
-- a conflict), on the requirements line it concerns. Start refuses such a version.
ALTER TABLE app_versions
    ADD COLUMN lock_error TEXT,
    ADD COLUMN lock_error_line INTEGER;
