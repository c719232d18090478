"""Federation: what may leave a node, how it travels (NATS JetStream), who may send it."""
