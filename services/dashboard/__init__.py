"""The operator dashboard: one page with live counts, throughput, queues, circuits and failures."""
