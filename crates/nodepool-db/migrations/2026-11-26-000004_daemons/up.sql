-- The daemons sharing this store, each with a lease it renews while it runs. A daemon whose
-- lease has expired is taken for dead: the work it had claimed is free for the others.
CREATE TABLE daemons (
    id VARCHAR(64) PRIMARY KEY,
    host VARCHAR(255) NOT NULL,
    pid BIGINT NOT NULL,
    started BIGINT NOT NULL,
    expires BIGINT NOT NULL
);

-- What an executor is working on (a launch, a build, a deletion), claimed by its daemon so
-- that no other daemon works on the same record at the same time.
CREATE TABLE work (
    subject_kind VARCHAR(16) NOT NULL,
    subject_id BIGINT NOT NULL,
    daemon VARCHAR(64) NOT NULL,
    since BIGINT NOT NULL,
    PRIMARY KEY (subject_kind, subject_id)
);
CREATE INDEX work_daemon ON work (daemon);
