"""Fixtures shared by every tier. The integration tier's real services live in
tests/integration/conftest.py."""
