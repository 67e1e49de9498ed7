-- What the read tables reflect, written by the projection runner in the same transaction as the rows.
-- Every projection commit takes the next data version, records the block (and its hash) the projection's tables
-- now reflect, keeps a short history of changes for push replay, and sends one notification on
-- rbtc_tables_changed. Readers (serve) read these rows in the same snapshot as the tables.

CREATE SEQUENCE read_version_seq;

CREATE TABLE read_versions (
    projection    text PRIMARY KEY,
    version       bigint NOT NULL,           -- data version of the projection's last commit (global sequence)
    block_number  bigint NOT NULL,           -- block the projection's tables reflect
    block_hash    text,                      -- its hash, when the store knows it
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Recent commits, newest last: lets a push client that reconnects learn exactly what changed since its last event.
CREATE TABLE read_changes (
    version       bigint PRIMARY KEY,
    projection    text   NOT NULL,
    block_number  bigint NOT NULL,
    block_hash    text,
    reverted_from bigint,                    -- lowest block this commit undid (a reorg or replay), else NULL
    addresses     text[],                    -- lower-case addresses whose rows changed; NULL = unknown (any)
    committed_at  timestamptz NOT NULL DEFAULT now()
);

-- Record a projection commit and notify listeners. Called inside the commit; returns the new data version.
-- The notification payload is JSON: {"s": schema, "p": projection, "v": version, "b": block, "h": hash, "r": reverted_from,
-- "a": addresses or null,
-- "t": commit time as Unix seconds}. Addresses are left out (null) when they would not fit in a notification.
CREATE FUNCTION rbtc_publish(
    p_projection text, p_block bigint, p_hash text, p_reverted_from bigint, p_addresses text[]
) RETURNS bigint LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v bigint := nextval('read_version_seq');
    h text := p_hash;
    payload text;
BEGIN
    IF h IS NULL THEN
        SELECT hash INTO h FROM follower_blocks WHERE number = p_block ORDER BY chain_id LIMIT 1;
    END IF;
    IF h IS NULL THEN
        SELECT indexed_hash INTO h FROM follower_cursor WHERE indexed_block = p_block ORDER BY chain_id LIMIT 1;
    END IF;
    INSERT INTO read_versions (projection, version, block_number, block_hash, updated_at)
    VALUES (p_projection, v, p_block, h, now())
    ON CONFLICT (projection) DO UPDATE
        SET version = excluded.version, block_number = excluded.block_number,
            block_hash = excluded.block_hash, updated_at = excluded.updated_at;
    INSERT INTO read_changes (version, projection, block_number, block_hash, reverted_from, addresses)
    VALUES (v, p_projection, p_block, h, p_reverted_from, p_addresses);
    DELETE FROM read_changes WHERE version <= v - 20000;
    payload := json_build_object('s', current_schema(), 'p', p_projection, 'v', v, 'b', p_block, 'h', h, 'r', p_reverted_from,
                                 'a', p_addresses, 't', extract(epoch FROM clock_timestamp()))::text;
    IF octet_length(payload) > 7900 THEN
        payload := json_build_object('s', current_schema(), 'p', p_projection, 'v', v, 'b', p_block, 'h', h, 'r', p_reverted_from,
                                     'a', NULL, 't', extract(epoch FROM clock_timestamp()))::text;
    END IF;
    PERFORM pg_notify('rbtc_tables_changed', payload);
    RETURN v;
END $$;
