"""``python -m daemon`` is the ``ocapd`` command."""

from .cli import main

main()
