-- The nodepool schema. One set of statements for every backend: only portable types
-- (BIGINT, VARCHAR, TEXT), ids allocated from the counters table, times as milliseconds
-- since the Unix epoch (UTC).

-- Id allocation: each row holds the last id given out for one kind of record.
CREATE TABLE counters (
    name VARCHAR(32) PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('node', 0), ('image', 0), ('request', 0), ('build', 0);

-- One row: who this installation is. Its id tags every cloud resource it creates.
CREATE TABLE installation (
    singleton BIGINT PRIMARY KEY CHECK (singleton = 1),
    installation_id VARCHAR(64) NOT NULL,
    created BIGINT NOT NULL
);

CREATE TABLE nodes (
    id BIGINT PRIMARY KEY,
    provider VARCHAR(255) NOT NULL,
    label VARCHAR(255) NOT NULL,
    az VARCHAR(255),
    hostname VARCHAR(255),
    external_id VARCHAR(255),
    public_ip VARCHAR(64),
    private_ip VARCHAR(64),
    state VARCHAR(16) NOT NULL,
    state_time BIGINT NOT NULL,
    image_id BIGINT,
    request_id BIGINT,
    hold_reason TEXT,
    hold_by VARCHAR(255),
    created BIGINT NOT NULL
);
CREATE UNIQUE INDEX nodes_external_id ON nodes (provider, external_id);
CREATE INDEX nodes_provider_label ON nodes (provider, label);
CREATE INDEX nodes_label_state ON nodes (label, state, state_time);
CREATE INDEX nodes_request ON nodes (request_id);

CREATE TABLE images (
    id BIGINT PRIMARY KEY,
    provider VARCHAR(255) NOT NULL,
    name VARCHAR(255) NOT NULL,
    version BIGINT NOT NULL,
    hostname VARCHAR(255),
    external_id VARCHAR(255),
    server_external_id VARCHAR(255),
    state VARCHAR(16) NOT NULL,
    state_time BIGINT NOT NULL,
    build_request_id BIGINT,
    created BIGINT NOT NULL
);
CREATE UNIQUE INDEX images_external_id ON images (provider, external_id);
CREATE INDEX images_provider_name ON images (provider, name, version);

CREATE TABLE node_requests (
    id BIGINT PRIMARY KEY,
    requestor VARCHAR(255) NOT NULL,
    priority BIGINT NOT NULL,
    state VARCHAR(16) NOT NULL,
    state_time BIGINT NOT NULL,
    failure TEXT,
    created BIGINT NOT NULL
);
CREATE INDEX node_requests_state ON node_requests (state, created);

-- The labels a request wants, one row per node wanted, with the node assigned to it.
CREATE TABLE request_labels (
    request_id BIGINT NOT NULL REFERENCES node_requests (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    label VARCHAR(255) NOT NULL,
    node_id BIGINT,
    PRIMARY KEY (request_id, position)
);

CREATE TABLE build_requests (
    id BIGINT PRIMARY KEY,
    provider VARCHAR(255),
    image VARCHAR(255) NOT NULL,
    requested_by VARCHAR(255) NOT NULL,
    state VARCHAR(16) NOT NULL,
    state_time BIGINT NOT NULL,
    failure TEXT,
    created BIGINT NOT NULL
);
CREATE INDEX build_requests_state ON build_requests (state, created);

-- The append-only history of every node, image, request and build request. Entries
-- outlive their subject, so that `nodepool show` can explain a node that is gone.
CREATE TABLE events (
    subject_kind VARCHAR(16) NOT NULL,
    subject_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    time BIGINT NOT NULL,
    what TEXT NOT NULL,
    reason_code VARCHAR(64) NOT NULL,
    reason TEXT NOT NULL,
    actor VARCHAR(255) NOT NULL,
    PRIMARY KEY (subject_kind, subject_id, seq)
);
CREATE INDEX events_time ON events (time);
