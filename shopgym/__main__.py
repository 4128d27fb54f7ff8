"""``python -m shopgym`` runs the command line."""

from shopgym.cli import console

console()
