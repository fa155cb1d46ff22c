"""`python -m bootstrap` runs the vboot CLI, through the same entry as the `vboot` console script."""

from bootstrap.cli.entry import main

if __name__ == "__main__":
    main()
