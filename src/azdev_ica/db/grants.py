"""The PostgreSQL privileges of the application role (`ica db grants ROLE` prints them).

The schema belongs to an owner role that runs migrations; the server connects as an
application role that may only read and append to the ledger: no UPDATE, DELETE or TRUNCATE
on any append-only table, on top of the triggers (which refuse even the owner). Only a
superuser can then change history, and `ica audit verify` catches that.
"""

from __future__ import annotations

import re

from azdev_ica.db.tables import APPEND_ONLY_TABLES, Base

# Tables that are erasable by design: a person's data openings (GDPR erasure).
ERASABLE = frozenset({"azdev_audit_personal"})

_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def grant_statements(role: str) -> list[str]:
    """SQL that gives ``role`` exactly what the server needs, table by table."""
    if not _ROLE.fullmatch(role):
        raise ValueError(f"{role!r} is not a plain lower-case PostgreSQL role name")
    statements = [f"GRANT USAGE ON SCHEMA public TO {role}"]
    for table in sorted(Base.metadata.tables):
        if table in APPEND_ONLY_TABLES:
            privileges = "SELECT, INSERT"
        elif table in ERASABLE:
            privileges = "SELECT, INSERT, DELETE"
        else:
            privileges = "SELECT, INSERT, UPDATE, DELETE"
        statements.append(f"REVOKE ALL ON {table} FROM {role}")
        statements.append(f"GRANT {privileges} ON {table} TO {role}")
    statements.append(f"GRANT SELECT ON alembic_version TO {role}")
    statements.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
    return statements
