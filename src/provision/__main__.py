"""`python -m provision` is the same as the `nucleus-provision` console script."""

from provision.cli import main

if __name__ == "__main__":
    main()
