-- Move the follower cursor only if it still stands at the expected stream version; otherwise abort the
-- append transaction, so a stale or second writer never stores anything.
CREATE FUNCTION rbtc_advance_cursor(
    p_chain_id bigint, p_expected bigint, p_new bigint, p_block bigint, p_hash text, p_finalized bigint
) RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE follower_cursor
       SET stream_version = p_new, indexed_block = p_block, indexed_hash = p_hash,
           finalized_block = greatest(finalized_block, p_finalized), updated_at = now()
     WHERE chain_id = p_chain_id AND stream_version = p_expected;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'cursor moved: chain % is no longer at stream version %', p_chain_id, p_expected;
    END IF;
END $$;

-- Deliberate rewinds asked for by `rbtc-indexer replay` while a daemon holds the writer lock.
CREATE TABLE replay_requests (
    id           bigserial PRIMARY KEY,
    chain_id     bigint NOT NULL,
    from_block   bigint NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz
);
