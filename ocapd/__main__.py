"""``python -m ocapd`` is the ``ocapd`` command."""

from ocapd.cli import main

main()
