-- Indexes the queue, the janitor and the purges need once `jobs` holds millions of
-- finished rows (each was a scan of the whole table before; see `ferry bench
-- shared` in docs/benchmarks.md). Each is partial, so finished jobs cost them
-- nothing or leave them as they finish.

-- Queued or running jobs of an organization and kind: the admission caps
-- (`count_active`) and dedupe keys (`find_active_duplicate`) on every create.
CREATE INDEX jobs_active ON jobs (organization_id, kind) WHERE state IN ('queued', 'running');

-- Completed jobs by expiry: the janitor's pass over exports whose file is due.
CREATE INDEX jobs_expiring ON jobs (kind, expires_at) WHERE state = 'completed';

-- Idempotency keys still held: released after their 24 h window.
CREATE INDEX jobs_request_ids_held ON jobs (created_at) WHERE request_id IS NOT NULL;

-- Ended jobs by end time: the purge of jobs past `jobs.retention_days`.
CREATE INDEX jobs_ended ON jobs (finished_at) WHERE state IN ('completed', 'failed', 'cancelled', 'expired');
