"""``python -m chainsight``: the command line."""

from api.cli import main

main()
