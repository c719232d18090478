"""handsoff services: the partner node, its HTTP API and the command line."""
