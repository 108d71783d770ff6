"""`python -m synthgap ...` (and `torchrun -m synthgap ...`) run the CLI."""

from synthgap.cli import main

if __name__ == "__main__":
    main()
