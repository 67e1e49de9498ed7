-- The cursor guard raises its own SQLSTATE (RBI01, "cursor moved"), so the code recognises a stale or second
-- writer by its code rather than by the wording of the message.
CREATE OR REPLACE FUNCTION rbtc_advance_cursor(
    p_chain_id bigint, p_expected bigint, p_new bigint, p_block bigint, p_hash text, p_finalized bigint
) RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE follower_cursor
       SET stream_version = p_new, indexed_block = p_block, indexed_hash = p_hash,
           finalized_block = greatest(finalized_block, p_finalized), updated_at = now()
     WHERE chain_id = p_chain_id AND stream_version = p_expected;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'cursor moved: chain % is no longer at stream version %', p_chain_id, p_expected
              USING ERRCODE = 'RBI01';
    END IF;
END $$;
