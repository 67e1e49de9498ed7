-- Operations that must survive real conditions: exact rebuild decisions and replay requests that report back.

-- The highest block whose logs a projection applied and has not undone since (an upper bound). A revert from
-- block f needs a rebuild only if f <= least(finalized_seen, applied_block): logs a later revert orphans are
-- skipped, so a rebuild's own pass never counts them. Existing rows start at their indexed block (conservative).
ALTER TABLE projection_tracking ADD COLUMN applied_block bigint NOT NULL DEFAULT -1;
UPDATE projection_tracking SET applied_block = indexed_block;

-- A replay request is done when its rewind is stored (done_at), or failed with a reason (error, done_at NULL,
-- failed_at set); the waiting command reports either.
ALTER TABLE replay_requests ADD COLUMN taken_at timestamptz;
ALTER TABLE replay_requests ADD COLUMN failed_at timestamptz;
ALTER TABLE replay_requests ADD COLUMN error text;
