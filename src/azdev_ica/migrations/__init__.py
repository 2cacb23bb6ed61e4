"""Alembic migrations, shipped inside the package so `ica db upgrade` works from a wheel."""
