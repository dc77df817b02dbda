"""Utilities shared by the core: registries, events, distributed helpers, logging, files."""
