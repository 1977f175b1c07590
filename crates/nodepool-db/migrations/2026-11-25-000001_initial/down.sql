DROP TABLE events;
DROP TABLE build_requests;
DROP TABLE request_labels;
DROP TABLE node_requests;
DROP TABLE images;
DROP TABLE nodes;
DROP TABLE installation;
DROP TABLE counters;
