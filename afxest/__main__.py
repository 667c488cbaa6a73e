"""``python -m afxest``."""

from afxest.cli import console

console()
