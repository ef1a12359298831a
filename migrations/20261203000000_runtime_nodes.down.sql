DROP TABLE runtime_nodes;
