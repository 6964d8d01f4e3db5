"""`python -m batchlabel.cli ...` runs the `batchlabel` command."""

from batchlabel.cli import main

if __name__ == "__main__":
    main()
