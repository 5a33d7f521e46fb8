"""ptg.cli: the thin `ptg` command line; one module per command, all work done in the library."""
