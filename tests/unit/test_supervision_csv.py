"""The supervision CSV (pure)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from ingest.supervision import Figures, SupervisionReport, UnitFigures, to_csv


def test_rows_per_officer_then_unit_totals_and_no_formulas() -> None:
    fig = Figures(items=2, recorded_seconds=5400, cases_with_gaps={"C1"}, late_uploads=1)
    evil = Figures(items=1)
    total = Figures()
    total.add(fig)
    total.add(evil)
    report = SupervisionReport(
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 3, 2, tzinfo=UTC),
        [UnitFigures("=HYPERLINK(1)", total, {"p1": fig, "+cmd": evil})],
    )
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert [(r["unit"], r["officer"], r["items"]) for r in rows] == [
        ("'=HYPERLINK(1)", "p1", "2"),
        ("'=HYPERLINK(1)", "'+cmd", "1"),
        ("'=HYPERLINK(1)", "*", "3"),
    ]
    assert rows[0]["recorded_hours"] == "1.500" and rows[0]["cases_with_gaps"] == "1"
