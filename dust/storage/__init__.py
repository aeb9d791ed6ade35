"""Storage: SQLAlchemy models, repositories and Alembic migrations. The same code runs on SQLite and PostgreSQL."""
