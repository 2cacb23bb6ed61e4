"""Test support: the PostgreSQL server the suite starts, and database factories."""
