"""The report as a document: its overview, tables and figures, before it is rendered (``render.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from cltune.reports.tables import Table


@dataclass
class FigureSection:
    """One figure of the report, or the note saying why it was skipped."""

    name: str
    title: str
    caption: str
    png: bytes | None = None
    note: str | None = None


@dataclass
class Report:
    """Everything a report shows, in the order :mod:`cltune.reports.render` writes it."""

    title: str
    overview: list[tuple[str, str]]
    comparison: Table
    definitions: list[tuple[str, str]]
    paired: Table | None
    paired_note: str
    figures: list[FigureSection]
    runs: Table
