"""The message bus: envelopes (wire), the transport seam (transport, amqp, memory) and the consumer."""
