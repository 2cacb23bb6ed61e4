"""db/rows.py: a plain row has a field for every column of its table, in the table's order
(the write path builds rows from a Core SELECT of the table's columns, by position)."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from azdev_ica.db.rows import EVENT_FIELDS, RUN_FIELDS
from azdev_ica.db.tables import PipelineEvent, PipelineRun


def test_a_run_row_has_the_run_tables_columns_in_order() -> None:
    assert tuple(cast(Table, PipelineRun.__table__).columns.keys()) == RUN_FIELDS


def test_an_event_row_has_the_event_tables_columns_in_order() -> None:
    assert tuple(cast(Table, PipelineEvent.__table__).columns.keys()) == EVENT_FIELDS
