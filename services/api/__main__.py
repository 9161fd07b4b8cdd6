"""``python -m services.api``: see :mod:`services.api.cli`."""

from services.api.cli import app

if __name__ == "__main__":
    app()
