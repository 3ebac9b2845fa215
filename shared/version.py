"""The fedmi version string (one place)."""

VERSION = "0.1.0"
