"""Tests of tagwall.analytics.collectors: one file per decoder, plus real exporters (root)."""
