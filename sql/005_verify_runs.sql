-- One row per `rbtc-indexer verify` run (or automatic verification in `run`): the block it compared at, what it
-- covered and what it found. Owned by indexer/store/verify_runs.py.
CREATE TABLE verify_runs (
    id                bigserial PRIMARY KEY,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL DEFAULT now(),
    block_number      bigint,                -- NULL when the run failed before choosing a block
    block_hash        text,
    outcome           text    NOT NULL,      -- equal, differences, error
    users_checked     integer NOT NULL DEFAULT 0,
    columns_checked   integer NOT NULL DEFAULT 0,
    differences       integer NOT NULL DEFAULT 0,
    differences_by_column jsonb NOT NULL DEFAULT '{}'::jsonb,
    duration_seconds  double precision NOT NULL,
    error             text
);
CREATE INDEX verify_runs_finished_idx ON verify_runs (finished_at DESC);
