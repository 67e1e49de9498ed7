"""`rbtc-indexer verify`: the read tables compared with on-chain state at one block pinned by its hash.

Modules, in the order a run uses them: `block` chooses the block the tables are consistent at, `tables` reads
them in that same database snapshot, `chain_state` reads the contracts' getters at the pinned block (Multicall3
`aggregate3`, JSON-RPC batches as fallback), `compare` lists every difference, `report` prints the result, and
`verifier` runs the whole and records it.
"""
