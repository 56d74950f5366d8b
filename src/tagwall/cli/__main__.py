"""``python -m tagwall.cli``: the same as the ``tagwall`` console script."""

from . import main

main()
