-- The grids an app publishes and their columns, as its connector declared them when it last
-- loaded: `ListGrids` and the clients' grid pickers read them without reading any changelog.
CREATE TABLE app_grids (
    app_id  UUID NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    grid    TEXT NOT NULL,
    columns TEXT[] NOT NULL,
    PRIMARY KEY (app_id, grid)
);

-- Grids shared read-only with another team (the customer case): that team's members and its
-- team tokens may read them as the owning team's do.
CREATE TABLE grid_shares (
    app_id     UUID NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    grid       TEXT NOT NULL,
    team_id    UUID NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, grid, team_id)
);
