"""HTTP routes, one module per resource. Routes parse, call a use-case, map the outcome."""
