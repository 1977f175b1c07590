DROP TABLE failures;
DELETE FROM counters WHERE name = 'failure';
