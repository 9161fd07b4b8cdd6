"""The sender: takes dispatch messages from its shards, calls providers, publishes outcomes."""
