"""``python -m tagwall.l7fw``: run the reference L7 firewall in the current namespace."""

from __future__ import annotations

import sys

from ._cli import main

sys.exit(main())
