"""Bundled example audio and presets (see docs/examples.md for their sources and licences)."""
