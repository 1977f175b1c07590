-- The SSH host keys a node's server presented when it was reached, one OpenSSH public key
-- per line, so that consumers can pin them (known_hosts) and the periodic check can notice
-- a node that answers with another key.
ALTER TABLE nodes ADD COLUMN host_keys TEXT;
