"""A worker: consumes its architecture's queue and builds each job in a builder container."""
