-- When each organization last had a job claimed. Workers claim the oldest runnable
-- job of the organization served longest ago, so one organization's backlog never
-- starves another's single job.
CREATE TABLE queue_turns (
    organization_id TEXT PRIMARY KEY NOT NULL,
    last_claimed_at BIGINT NOT NULL
);
