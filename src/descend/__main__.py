"""``python -m descend`` (and ``torchrun -m descend``) runs the command-line tool."""

from descend.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
