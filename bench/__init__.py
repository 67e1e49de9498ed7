"""Benchmarks of the indexer against a large generated chain (`make bench`, see bench/README.md)."""
