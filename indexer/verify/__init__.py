"""`rbtc-indexer verify`: the read tables compared with on-chain state at one block pinned by its hash.

Modules, in the order a run uses them: `tables` chooses the block the tables are consistent at and reads them
(and the event store's logs) in one database snapshot, `chain_state` reads the contracts' getters at the pinned
block (Multicall3 `aggregate3`, JSON-RPC batches as fallback), `compare` lists every difference, `report` prints
the result; `verifier` runs the whole and records it, `periodic` repeats it inside `run`. `records` holds the
typed records that pass between them.
"""
