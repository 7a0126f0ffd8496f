"""The controller: accepts builds, records them, routes each target to its arch's queue."""
