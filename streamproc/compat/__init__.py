"""Patches of third-party internals, each version-checked and installed once."""
