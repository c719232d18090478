"""The regional aggregator: verified shared events in, indicators by month and country out."""
