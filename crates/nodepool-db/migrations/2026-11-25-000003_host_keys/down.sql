ALTER TABLE nodes DROP COLUMN host_keys;
