-- Failed launches and builds, kept after their node or image row is gone so that the
-- policies can back off. Pruned by age (Store::prune_failures).
INSERT INTO counters (name, value) VALUES ('failure', 0);
CREATE TABLE failures (
    id BIGINT PRIMARY KEY,
    provider VARCHAR(255) NOT NULL,
    attempt VARCHAR(16) NOT NULL,
    subject VARCHAR(255) NOT NULL,
    time BIGINT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX failures_time ON failures (time);
