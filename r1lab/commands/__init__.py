"""One module per `r1lab` subcommand (see r1lab/cli.py)."""
