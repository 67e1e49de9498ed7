"""Test helpers: simulated chain and fault-injecting JSON-RPC proxy."""
