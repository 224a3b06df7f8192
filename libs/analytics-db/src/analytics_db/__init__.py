"""psycopg connection pool and ordered SQL migration runner."""
