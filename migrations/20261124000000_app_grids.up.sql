-- The grids an app publishes and their columns, as its connector declared them when it last
-- loaded: `ListGrids` and the clients' grid pickers read them without reading any changelog.
CREATE TABLE app_grids (
    app_id  UUID NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    grid    TEXT NOT NULL,
    columns TEXT[] NOT NULL,
    PRIMARY KEY (app_id, grid)
);
