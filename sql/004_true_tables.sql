-- Tables true to the protocol: receipt facts on transactions, the frontend's oracle_operations_log columns,
-- and DEPOSIT operations (registerAndPrepay) that carry wei, not sats.
-- Rows written before this migration lack the new facts: run `rbtc-indexer rebuild` after upgrading.

ALTER TABLE transactions
    ADD COLUMN tx_from text,              -- the transaction's sender (receipt)
    ADD COLUMN tx_to   text;              -- the transaction's recipient (receipt)
COMMENT ON COLUMN transactions.gas_used IS 'gas used by the transaction (receipt)';
COMMENT ON COLUMN transactions.gas_price IS 'effective gas price in wei (receipt)';

ALTER TABLE oracle_operations_log
    ALTER COLUMN amount_sats DROP NOT NULL,   -- NULL for DEPOSIT (its amount is wei, in fee_wei)
    ADD COLUMN id                text,        -- tx_hash:log_index, the same across replays and rebuilds
    ADD COLUMN "timestamp"       timestamptz, -- chain time of the block (the frontend's order key)
    ADD COLUMN action            text,        -- = operation_type
    ADD COLUMN consensus_reached boolean,     -- off-chain only
    ADD COLUMN sources_used      text[],      -- off-chain only
    ADD COLUMN created_at        timestamptz; -- chain time of the block (deterministic across replays)
UPDATE oracle_operations_log
   SET id = tx_hash || ':' || log_index, "timestamp" = block_timestamp, action = operation_type,
       created_at = block_timestamp;
ALTER TABLE oracle_operations_log
    ALTER COLUMN id SET NOT NULL,
    ALTER COLUMN "timestamp" SET NOT NULL,
    ALTER COLUMN action SET NOT NULL,
    ALTER COLUMN created_at SET NOT NULL;
CREATE UNIQUE INDEX oracle_operations_log_id_idx ON oracle_operations_log (id);
CREATE INDEX oracle_operations_log_time_idx ON oracle_operations_log ("timestamp" DESC);
