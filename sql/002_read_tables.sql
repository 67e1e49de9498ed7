-- Read tables the frontend queries. Addresses are lower-case hex, times are chain time, amounts exact NUMERIC.
-- Each table carries the undo-journal trigger, so any projection that writes it is reorg-safe.

CREATE TABLE balances (
    user_address      text PRIMARY KEY,
    last_sats         numeric NOT NULL DEFAULT 0,   -- newBalanceSats of the latest Synced
    rbtc_balance      numeric NOT NULL DEFAULT 0,   -- sum of RBTCSynth mints minus burns, sats
    wrbtc_balance     numeric NOT NULL DEFAULT 0,   -- VaultWrBTC transfers in minus out, sats
    fee_vault_wei     numeric NOT NULL DEFAULT 0,   -- Deposited - Spent - Withdrawn, wei
    last_sync_block   bigint,
    last_sync_time    timestamptz,
    last_sync_delta   numeric,
    last_sync_fee_wei numeric,
    updated_block     bigint NOT NULL
);
SELECT rbtc_attach_undo('balances');

CREATE TABLE transactions (
    tx_hash           text    NOT NULL,
    log_index         integer NOT NULL,
    block_number      bigint  NOT NULL,
    block_timestamp   timestamptz NOT NULL,
    user_address      text    NOT NULL,
    tx_type           text    NOT NULL,   -- MINT, BURN, DEPOSIT, WITHDRAW, WRAP, UNWRAP
    amount            numeric NOT NULL,   -- |delta| in sats for MINT/BURN, wei for vault rows, sats for WRAP/UNWRAP
    delta             numeric NOT NULL,   -- signed change
    fee_wei           numeric NOT NULL DEFAULT 0,
    is_emergency_burn boolean NOT NULL DEFAULT false,
    status            text    NOT NULL DEFAULT 'confirmed',
    metadata          jsonb   NOT NULL DEFAULT '{}'::jsonb,
    bitcoin_address   text,              -- off-chain, unknown to the chain
    gas_used          numeric,
    gas_price         numeric,
    PRIMARY KEY (tx_hash, log_index)
);
CREATE INDEX transactions_user_time_idx ON transactions (user_address, block_timestamp DESC);
SELECT rbtc_attach_undo('transactions');

CREATE TABLE emergency_burns (
    tx_hash       text    NOT NULL,
    log_index     integer NOT NULL,
    block_number  bigint  NOT NULL,
    "timestamp"   timestamptz NOT NULL,
    user_address  text    NOT NULL,
    burned_amount numeric NOT NULL,
    reason        text    NOT NULL,
    PRIMARY KEY (tx_hash, log_index)
);
CREATE INDEX emergency_burns_user_idx ON emergency_burns (user_address, "timestamp" DESC);
SELECT rbtc_attach_undo('emergency_burns');

CREATE TABLE yield_scales_participants (
    user_address     text PRIMARY KEY,
    participant_type smallint NOT NULL,     -- 0 Bitcoin holder, 1 trader
    loyalty_tier     smallint NOT NULL DEFAULT 0,
    is_active        boolean  NOT NULL DEFAULT true,
    virtual_usdt     numeric  NOT NULL DEFAULT 0,
    rbtc_contributed numeric  NOT NULL DEFAULT 0,
    yield_claimed    numeric  NOT NULL DEFAULT 0,
    yield_earned     numeric  NOT NULL DEFAULT 0,   -- never written on chain
    joined_at        timestamptz NOT NULL,
    last_activity_at timestamptz NOT NULL,
    is_disputed      boolean  NOT NULL DEFAULT false,
    updated_block    bigint   NOT NULL
);
SELECT rbtc_attach_undo('yield_scales_participants');

CREATE TABLE oracle_operations_log (
    tx_hash          text    NOT NULL,
    log_index        integer NOT NULL,
    block_number     bigint  NOT NULL,
    block_timestamp  timestamptz NOT NULL,
    operation_type   text    NOT NULL,   -- MINT, BURN, EMERGENCY_BURN
    user_address     text    NOT NULL,
    amount_sats      numeric NOT NULL,
    fee_wei          numeric,
    bitcoin_address  text,               -- off-chain only
    oracle_node      text,               -- off-chain only
    consensus_data   jsonb,              -- off-chain only
    PRIMARY KEY (tx_hash, log_index)
);
CREATE INDEX oracle_operations_log_user_idx ON oracle_operations_log (user_address, block_number DESC);
SELECT rbtc_attach_undo('oracle_operations_log');
