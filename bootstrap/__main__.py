"""`python -m bootstrap` runs the vboot CLI."""

from bootstrap.cli.main import main

if __name__ == "__main__":
    main()
