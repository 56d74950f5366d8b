"""tagwall: an intent-driven distributed firewall for cloud workloads.

See DESIGN.md for the picture and docs/codemap.md for one line per package.
"""

__version__ = "0.1.0"
