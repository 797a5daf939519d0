"""Supervision figures (执法监督): per unit and officer, over a time window, are the recording
duties met? Items, recorded hours, cases with recording gaps, late uploads, devices with clock
skew, unprocessable items.

An item belongs to the window by its capture time (its receipt time when it has none). The
officer's unit is the officer's own (``persons.unit``), else the recording device's.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ingest.timeline import cases_of_items, find_breaks, recordings_of, skew_warnings
from storage.tables import Device, Item, Person

__all__ = ["Figures", "SupervisionReport", "UnitFigures", "supervision_report", "to_csv"]

UNKNOWN = ""
"""The unit (or officer) of an item when nothing says it."""


@dataclass
class Figures:
    """The duty figures of one officer (or, added up, of a unit)."""

    items: int = 0
    recorded_seconds: float = 0.0
    cases_with_gaps: set[str] = field(default_factory=set)
    late_uploads: int = 0
    skewed_devices: set[str] = field(default_factory=set)
    unprocessable: int = 0

    @property
    def recorded_hours(self) -> float:
        return self.recorded_seconds / 3600

    def add(self, other: Figures) -> None:
        self.items += other.items
        self.recorded_seconds += other.recorded_seconds
        self.cases_with_gaps |= other.cases_with_gaps
        self.late_uploads += other.late_uploads
        self.skewed_devices |= other.skewed_devices
        self.unprocessable += other.unprocessable


@dataclass(frozen=True)
class UnitFigures:
    unit: str
    """The unit's name; ``""`` when not known."""
    total: Figures
    officers: dict[str, Figures]
    """By officer ID (``""``: not known), sorted."""


@dataclass(frozen=True)
class SupervisionReport:
    start: datetime
    end: datetime
    units: list[UnitFigures]
    """Sorted by unit name, the unknown unit last."""


def _in_window(start: datetime, end: datetime) -> object:
    return or_(
        (Item.captured_at >= start) & (Item.captured_at < end),
        Item.captured_at.is_(None) & (Item.received_at >= start) & (Item.received_at < end),
    )


def supervision_report(
    session: Session,
    *,
    start: datetime,
    end: datetime,
    gap_threshold: timedelta,
    late_after: timedelta,
    skew_threshold: timedelta,
    units: Iterable[str] | None = None,
) -> SupervisionReport:
    """Figures for items captured in [start, end), optionally only of the given units."""
    items = list(
        session.scalars(
            select(Item).where(_in_window(start, end)).order_by(Item.captured_at, Item.id)  # type: ignore[arg-type]
        )
    )
    person_units = dict(
        session.execute(select(Person.id, Person.unit).where(Person.unit.is_not(None))).all()
    )
    device_units = dict(
        session.execute(select(Device.id, Device.unit).where(Device.unit.is_not(None))).all()
    )
    recordings = {r.item_id: r for r in recordings_of(session, items)}
    case_ids = cases_of_items(session, [i.id for i in items])
    skewed = {w.item_id: w for w in skew_warnings(recordings.values(), threshold=skew_threshold)}

    per_officer: dict[tuple[str, str], Figures] = {}
    by_case_officer: dict[tuple[str, str], list[str]] = {}
    for item in items:
        officer = item.officer_id or UNKNOWN
        unit = person_units.get(officer) or device_units.get(item.device_id or "") or UNKNOWN
        fig = per_officer.setdefault((unit, officer), Figures())
        rec = recordings[item.id]
        fig.items += 1
        if rec.covers_time:
            fig.recorded_seconds += rec.seconds
        done = rec.end or rec.start
        if done is not None and item.received_at - done > late_after:
            fig.late_uploads += 1
        if item.id in skewed and item.device_id:
            fig.skewed_devices.add(item.device_id)
        if item.status == "unprocessable":
            fig.unprocessable += 1
        for case_id in case_ids[item.id]:
            by_case_officer.setdefault((case_id, officer), []).append(item.id)

    officer_unit = {officer: unit for unit, officer in per_officer}
    for (case_id, officer), ids in by_case_officer.items():
        gaps, _ = find_breaks((recordings[i] for i in ids), threshold=gap_threshold)
        if gaps:
            per_officer[(officer_unit[officer], officer)].cases_with_gaps.add(case_id)

    wanted = set(units) if units is not None else None
    grouped: dict[str, dict[str, Figures]] = {}
    for (unit, officer), fig in per_officer.items():
        if wanted is None or unit in wanted:
            grouped.setdefault(unit, {})[officer] = fig
    out = []
    for unit in sorted(grouped, key=lambda u: (u == UNKNOWN, u)):
        officers = dict(sorted(grouped[unit].items()))
        total = Figures()
        for fig in officers.values():
            total.add(fig)
        out.append(UnitFigures(unit, total, officers))
    return SupervisionReport(start, end, out)


CSV_COLUMNS = (
    "unit",
    "officer",
    "items",
    "recorded_hours",
    "cases_with_gaps",
    "late_uploads",
    "devices_with_clock_skew",
    "unprocessable",
)


def to_csv(report: SupervisionReport) -> str:
    """One row per officer, then a ``*`` row with the unit's totals (UTF-8; the window
    is the caller's to name, e.g. in the file name)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for unit in report.units:
        for officer, fig in [*unit.officers.items(), ("*", unit.total)]:
            writer.writerow(
                (
                    _safe(unit.unit),
                    _safe(officer),
                    fig.items,
                    f"{fig.recorded_hours:.3f}",
                    len(fig.cases_with_gaps),
                    fig.late_uploads,
                    len(fig.skewed_devices),
                    fig.unprocessable,
                )
            )
    return buf.getvalue()


def _safe(cell: str) -> str:
    """A cell a spreadsheet will not run as a formula (CSV injection)."""
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell
