"""`python -m taxonomist` runs the command line."""

from .cli import main

main()
