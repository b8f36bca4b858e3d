"""`python -m pushup` is the `pushup` command."""

from pushup.cli import main

main()
