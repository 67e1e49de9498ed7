"""`python -m indexer` runs the CLI."""

from indexer.cli.main import main

main()
