"""Schema migrations: upgrade to head, downgrade one step, and tell whether a database is
current.

The ledger's migrations are forward-only: going back across one would drop or orphan audit
evidence (entries, leaf hashes, witness cosignatures). They are named in `FORWARD_ONLY` (a
later migration may also declare a module-level `forward_only = "why"`), and `downgrade`
refuses them before it changes anything. A migration whose own `downgrade()` raises (audit
evidence outside the ledger tables, e.g. approval signatures) is refused the same way: its
transaction is rolled back and the database stays where it was."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("azdev_ica") / "migrations"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to `revision` in one transaction."""
    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


# Revision -> why it cannot be undone (the ledger's tables and their evidence).
FORWARD_ONLY: dict[str, str] = {
    "0002_ledger": "it creates the audit ledger; going back would destroy the audit history",
    "0007_ledger_speed": "entries sealed since then keep their leaf hashes only in "
    "azdev_audit_entry.leaf",
    "0020_witness": "witness cosignatures are ledger evidence; going back would drop them",
}


class DowngradeRefused(Exception):
    """A downgrade that would cross a forward-only migration (nothing was changed)."""


def forward_only_reason(revision: str) -> str | None:
    """Why `revision` cannot be downgraded, or None when it can."""
    if revision in FORWARD_ONLY:
        return FORWARD_ONLY[revision]
    script = ScriptDirectory.from_config(_config()).get_revision(revision)
    reason = getattr(script.module, "forward_only", None) if script is not None else None
    return str(reason) if reason else None


def previous_revision(revision: str) -> str | None:
    script = ScriptDirectory.from_config(_config()).get_revision(revision)
    down = script.down_revision if script is not None else None
    if down is None or isinstance(down, str):
        return down
    raise DowngradeRefused(f"{revision} merges several revisions; downgrade by hand")


def downgrade(engine: Engine) -> tuple[str, str | None]:
    """Undo the current migration (one step back) in one transaction; answer (from, to).
    Raises DowngradeRefused, changing nothing, for a forward-only migration or an empty
    database."""
    current = current_revision(engine)
    if current is None:
        raise DowngradeRefused("the database has no schema: there is nothing to downgrade")
    reason = forward_only_reason(current)
    if reason is not None:
        raise DowngradeRefused(
            f"{current} is forward-only: {reason}. Restore a backup taken before the upgrade "
            "instead."
        )
    config = _config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "-1")
    except RuntimeError as exc:  # a migration's downgrade() that refuses (rolled back)
        raise DowngradeRefused(f"{current} is forward-only: {exc}") from None
    return current, previous_revision(current)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


def autogenerate(engine: Engine, message: str) -> None:  # pragma: no cover - developer tool
    """Write a new revision file from the difference between the tables and `engine`."""
    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)
