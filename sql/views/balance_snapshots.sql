-- One row per user, with the column names the frontend's snapshot queries use.
CREATE VIEW balance_snapshots AS
SELECT user_address,
       last_sats,
       rbtc_balance,
       wrbtc_balance,
       fee_vault_wei,
       last_sync_block              AS block_number,
       coalesce(last_sync_time, to_timestamp(0)) AS snapshot_timestamp,
       updated_block
  FROM balances;
