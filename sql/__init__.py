"""Package data: the SQL migrations, shipped in the wheel as `indexer._sql` (see indexer/package_data.py)."""
