"""Pure decisions and typed models: no I/O here (no broker, database, network or clock reads beyond now())."""
