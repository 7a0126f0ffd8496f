"""The controller: accepts builds, records them, and routes each target to its architecture's queue."""
