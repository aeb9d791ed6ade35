"""The REST API: thin FastAPI routers over the engine, mounted under /api/v1."""
