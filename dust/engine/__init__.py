"""The engine: plain Python over a SQLAlchemy session. The API, CLI and SDK are thin adapters over it."""
