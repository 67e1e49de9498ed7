-- Follower state, projection tracking, status, and the generic undo journal.
-- Every statement is unqualified: the migration runner sets search_path to the configured schema.

CREATE TABLE follower_cursor (
    chain_id        bigint PRIMARY KEY,
    stream_version  bigint NOT NULL,          -- last version appended to the chain's event stream
    indexed_block   bigint NOT NULL,          -- every log up to and including this block is in the store
    indexed_hash    text,
    finalized_block bigint NOT NULL DEFAULT -1,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The unfinalized part of the chain as the store knows it: one row per block above the finalized block.
CREATE TABLE follower_blocks (
    chain_id    bigint NOT NULL,
    number      bigint NOT NULL,
    hash        text   NOT NULL,
    parent_hash text   NOT NULL,
    PRIMARY KEY (chain_id, number)
);

-- Learned eth_getLogs range per endpoint, kept across restarts.
CREATE TABLE rpc_range_hints (
    endpoint    text PRIMARY KEY,
    block_range bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per projection: the last notification id it applied, written with its tables in one transaction.
CREATE TABLE projection_tracking (
    projection      text PRIMARY KEY,
    notification_id bigint NOT NULL DEFAULT 0,
    finalized_seen  bigint NOT NULL DEFAULT -1,   -- blocks at or below this were applied without an undo journal
    indexed_block   bigint NOT NULL DEFAULT -1,   -- last block whose logs it has applied
    events_applied  bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sync_status (
    component        text PRIMARY KEY,            -- 'follower' or 'projection:<name>'
    chain_id         bigint,
    head_block       bigint,
    finalized_block  bigint,
    indexed_block    bigint,
    indexed_hash     text,
    lag_blocks       bigint,
    lag_seconds      double precision,
    events_processed bigint NOT NULL DEFAULT 0,
    undecodable_logs bigint NOT NULL DEFAULT 0,
    last_error       text,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Row images of every change a projection made to an unfinalized block. Filled by the trigger below
-- whenever the session setting rbtc.undo_block names a block; read back in reverse to undo a reorg.
CREATE TABLE undo_journal (
    id           bigserial PRIMARY KEY,
    table_schema text   NOT NULL,
    table_name   text   NOT NULL,
    block_number bigint NOT NULL,
    op           text   NOT NULL,
    old_row      jsonb,
    new_row      jsonb
);
CREATE INDEX undo_journal_block_idx ON undo_journal (table_schema, table_name, block_number);

CREATE FUNCTION rbtc_undo_capture() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO undo_journal (table_schema, table_name, block_number, op, old_row, new_row)
    VALUES (
        TG_TABLE_SCHEMA, TG_TABLE_NAME, current_setting('rbtc.undo_block')::bigint, TG_OP,
        CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(OLD) END,
        CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE to_jsonb(NEW) END
    );
    RETURN NULL;
END $$;

-- Attach the journal trigger to a table (any schema, e.g. a rebuild's shadow schema); entries always go to this
-- schema's journal, because both functions pin the search_path they were created with.
-- The WHEN clause keeps finalized writes cheap.
CREATE FUNCTION rbtc_attach_undo(target regclass) RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    journal_fn text := quote_ident(current_schema()) || '.rbtc_undo_capture';
BEGIN
    EXECUTE format(
        'CREATE TRIGGER rbtc_undo AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW '
        'WHEN (coalesce(current_setting(''rbtc.undo_block'', true), '''') <> '''') EXECUTE FUNCTION %s()',
        target, journal_fn);
END $$;

-- Undo every journaled change to the given tables at or above from_block, newest first, and drop those entries.
-- Rows are matched by primary key; the journal itself is not written while undoing.
CREATE FUNCTION rbtc_undo(journal_schema text, target_schema text, tables text[], from_block bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    entry record;
    pk_cols text;
    pk_match_new text;
    undone bigint := 0;
    qualified text;
BEGIN
    PERFORM set_config('rbtc.undo_block', '', true);
    FOR entry IN EXECUTE format(
        'SELECT id, table_name, op, old_row, new_row FROM %I.undo_journal '
        'WHERE table_schema = $1 AND table_name = ANY($2) AND block_number >= $3 ORDER BY id DESC',
        journal_schema) USING target_schema, tables, from_block
    LOOP
        qualified := format('%I.%I', target_schema, entry.table_name);
        SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum)
          INTO pk_cols
          FROM pg_index i
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
         WHERE i.indrelid = qualified::regclass AND i.indisprimary;
        IF pk_cols IS NULL THEN
            RAISE EXCEPTION 'table % has no primary key; the undo journal needs one', qualified;
        END IF;
        pk_match_new := format('(%s) = (SELECT %s FROM jsonb_populate_record(NULL::%s, $1))',
                               pk_cols, pk_cols, qualified);
        IF entry.op IN ('INSERT', 'UPDATE') THEN
            EXECUTE format('DELETE FROM %s WHERE %s', qualified, pk_match_new) USING entry.new_row;
        END IF;
        IF entry.op IN ('UPDATE', 'DELETE') THEN
            EXECUTE format('INSERT INTO %s SELECT * FROM jsonb_populate_record(NULL::%s, $1)',
                           qualified, qualified) USING entry.old_row;
        END IF;
        undone := undone + 1;
    END LOOP;
    EXECUTE format('DELETE FROM %I.undo_journal WHERE table_schema = $1 AND table_name = ANY($2) '
                   'AND block_number >= $3', journal_schema) USING target_schema, tables, from_block;
    RETURN undone;
END $$;
