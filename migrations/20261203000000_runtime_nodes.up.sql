-- The runtime nodes that are up, and where gateways follow the changelog records of the apps
-- they run (`aerogrid.runtime.v1.ChangelogRelay`). A node adds itself at start, refreshes
-- `seen_at` every minute and removes itself when it stops; a node that died is removed by the
-- others an hour after it was last seen. The token is what a gateway presents: only holders of
-- this database (servers and nodes) can follow a node.
CREATE TABLE runtime_nodes (
    node_id     TEXT PRIMARY KEY,
    relay_url   TEXT,
    relay_token TEXT,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    seen_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
