"""`python -m distillset`: the `distillset` command."""

from .cli import main

if __name__ == "__main__":
    main()
