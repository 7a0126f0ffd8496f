"""The revisions, one file each, oldest first by number (see migrations/__init__.py)."""
