"""Package data: the ABIs, shipped in the wheel as `indexer._abi` (see indexer/package_data.py)."""
