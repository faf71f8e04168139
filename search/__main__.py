"""`python -m search` is the `tune` command."""

from search.cli import main

main()
