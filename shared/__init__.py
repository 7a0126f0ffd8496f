"""The vocabulary the controller, the workers and the CLI speak: ids, states,
architectures, key names, wire models and the one error tree."""
