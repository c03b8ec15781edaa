"""Unit tests: pure functions, no database."""
