"""``python -m services.dlq``: see services/dlq/cli.py."""

from services.dlq.cli import app

if __name__ == "__main__":
    app()
