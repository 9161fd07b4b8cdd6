"""PostgreSQL: the pool, the migration step and its SQL files, roles and grants, stores shared by services."""
