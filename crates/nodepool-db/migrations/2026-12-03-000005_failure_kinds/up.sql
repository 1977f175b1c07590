-- What kind of step each failure was (quota, auth, cloud-error, timeout, ssh, script...),
-- so that the backoff can tell them apart. Failures recorded before have none: they read
-- back as "unknown".
ALTER TABLE failures ADD COLUMN kind TEXT;
