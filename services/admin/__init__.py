"""Set-up commands: database, migrations, RabbitMQ topology and definitions (``python -m services.admin``)."""
