DROP INDEX jobs_ended;
DROP INDEX jobs_request_ids_held;
DROP INDEX jobs_expiring;
DROP INDEX jobs_active;
