"""Tests of tagwall.analytics."""
