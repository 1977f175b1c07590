DROP TABLE work;
DROP TABLE daemons;
