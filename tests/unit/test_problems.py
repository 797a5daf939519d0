"""ingest.problems: item statuses and problem codes are closed sets whose values are the strings
the item documents carry; every code the pipeline writes is a member, and every member is written.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import ingest
from ingest.errors import MediaError, MetadataError
from ingest.problems import ItemStatus, Problem, ProblemCode
from integrity.errors import IntegrityError, LiuhenError
from storage.errors import ObjectStoreError

INGEST = Path(ingest.__file__).parent
CAUGHT: tuple[type[LiuhenError], ...] = (
    MediaError,
    MetadataError,
    IntegrityError,
    ObjectStoreError,
)
"""The errors ``ingest.jobs`` and ``ingest.media`` turn into problems (``Problem.from_error``)."""


def _tree(cls: type[LiuhenError]) -> Iterator[type[LiuhenError]]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _tree(sub)


def _error_codes() -> set[str]:
    # A subclass may live beside the code raising it (ingest.ledger.LogCorrupt): import them all.
    for name in ("ingest", "integrity", "storage"):
        package = importlib.import_module(name)
        for module in pkgutil.walk_packages(package.__path__, f"{name}."):
            importlib.import_module(module.name)
    return {cls.code for root in CAUGHT for cls in _tree(root)}


def _codes_in_source() -> set[str]:
    """``ProblemCode.NAME`` as written anywhere in ingest/ except the enum's own module."""
    names: set[str] = set()
    for path in INGEST.rglob("*.py"):
        if path.name != "problems.py":
            names |= set(re.findall(r"\bProblemCode\.([A-Z][A-Z0-9_]*)\b", path.read_text()))
    return names


def test_item_statuses_are_the_design_strings() -> None:
    assert [s.value for s in ItemStatus] == [
        "sealed",
        "processing",
        "ready",
        "partial",
        "unprocessable",
    ]
    assert f"{ItemStatus.PARTIAL}" == "partial"
    assert type(str(ItemStatus.READY)) is str


def test_code_values_are_their_names_in_lower_case() -> None:
    for code in ProblemCode:
        assert code.value == code.name.lower()


def test_every_code_an_error_carries_into_a_problem_is_a_member() -> None:
    codes = _error_codes()
    assert {"hash_mismatch", "log_corrupt", "object_not_found", "track_parse_error"} <= codes
    assert codes - set(ProblemCode) == set()


def test_every_code_written_is_a_member_and_every_member_is_written() -> None:
    written = _codes_in_source()
    assert {"CLOCK_SKEW", "MOOV_MISSING", "PIPELINE_FAILED", "EXIF_TRUNCATED"} <= written
    assert written - set(ProblemCode.__members__) == set(), "a name mypy would refuse"
    unused = {c.value for c in ProblemCode} - {ProblemCode[n].value for n in written}
    assert unused - _error_codes() == set(), "members nothing writes"


def test_a_problem_round_trips_through_its_stored_form() -> None:
    problem = Problem("capture_time", ProblemCode.CLOCK_SKEW, "off by 3 minutes")
    stored = problem.as_dict()
    assert stored == {"stage": "capture_time", "code": "clock_skew", "message": "off by 3 minutes"}
    assert type(stored["code"]) is str
    assert Problem.from_dict(stored) == problem
    assert Problem.from_dict(stored).code is ProblemCode.CLOCK_SKEW


def test_a_stored_problem_with_an_unknown_code_is_refused() -> None:
    with pytest.raises(ValueError, match="no_such_code"):
        Problem.from_dict({"stage": "probe", "code": "no_such_code", "message": "?"})


def test_an_error_becomes_a_problem_with_its_own_code() -> None:
    problem = Problem.from_error("store", ObjectStoreError("bucket refused"))
    assert problem == Problem("store", ProblemCode.OBJECT_STORE_ERROR, "bucket refused")
    titled = Problem.from_error("place", MetadataError("bad"), "linked track unusable: bad")
    assert (titled.code, titled.message) == ("metadata_error", "linked track unusable: bad")
