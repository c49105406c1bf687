"""Storage backends: memory, SQLite and Redis."""
