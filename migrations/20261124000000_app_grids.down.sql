DROP TABLE grid_shares;
DROP TABLE app_grids;
