"""Process plumbing every service shares: settings, logs, metrics, health, startup checks, service runner."""
