"""Storage: tables, the UTC datetime type and per-dialect engine setup."""
