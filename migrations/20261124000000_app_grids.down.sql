DROP TABLE app_grids;
