"""api.errors: every domain error, wherever it is defined, maps to an HTTP status and a CLI
exit code (the pattern of httpx's check that every transport error is mapped)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

import pytest

from api.errors import STATUS, exit_code, problem, status_for
from configs.errors import ConfigError
from ingest.errors import (
    EmptyFile,
    IngestError,
    IntakeRefused,
    IntegrityMismatch,
    LogKeyMissing,
    ManifestError,
    MediaError,
    MetadataError,
    ProbeError,
    TrackParseError,
)
from integrity.errors import HashMismatch, IntegrityError, LiuhenError, ProofError
from storage.errors import (
    Conflict,
    IndexError_,
    IndexUnavailable,
    NotFound,
    ObjectLocked,
    ObjectNotFound,
    ObjectStoreError,
    StorageError,
    StoreUnavailable,
)

PACKAGES = ("api", "configs", "ingest", "integrity", "storage")


def _import_everything() -> None:
    """Errors may be defined beside the code that raises them (``ingest.ledger.LogCorrupt``)."""
    for name in PACKAGES:
        package = importlib.import_module(name)
        for module in pkgutil.walk_packages(package.__path__, f"{name}."):
            importlib.import_module(module.name)


def _subclasses(cls: type[LiuhenError]) -> Iterator[type[LiuhenError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _ours(cls: type) -> bool:
    return cls.__module__.split(".")[0] in PACKAGES


_import_everything()
ERRORS = sorted(
    {cls for cls in _subclasses(LiuhenError) if _ours(cls)} | {LiuhenError},
    key=lambda c: f"{c.__module__}.{c.__qualname__}",
)


def _instance(cls: type[LiuhenError]) -> LiuhenError:
    """An instance without calling ``__init__`` (some take keyword arguments)."""
    error = cls.__new__(cls)
    error.args = (f"a {cls.__name__}",)
    return error


def test_the_walk_finds_errors_outside_the_errors_modules() -> None:
    names = {cls.__name__ for cls in ERRORS}
    assert {"LogCorrupt", "HashMismatch", "ManifestError", "ConfigError", "NotFound"} <= names
    assert len(ERRORS) >= 25


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__qualname__)
def test_every_error_maps_to_a_status_and_a_problem(cls: type[LiuhenError]) -> None:
    error = _instance(cls)
    status, title = status_for(error)
    assert 400 <= status < 600
    assert title
    doc = problem(error, instance="/v1/items/x")
    assert doc == {
        "type": f"urn:liuhen:problem:{cls.code}",
        "title": title,
        "status": status,
        "detail": f"a {cls.__name__}",
        "code": cls.code,
        "instance": "/v1/items/x",
    }
    assert exit_code(error) in {1, 3, 4, 5, 75, 78}


@pytest.mark.parametrize(
    "cls", [c for c in ERRORS if c is not LiuhenError], ids=lambda c: c.__qualname__
)
def test_every_error_has_a_mapping_of_its_own_package(cls: type[LiuhenError]) -> None:
    """The root is the table's catch-all, so "maps to a status" alone could never fail: every
    error must be matched by an entry more specific than the root."""
    matched = next(entry for entry, _, _ in STATUS if issubclass(cls, entry))
    assert matched is not LiuhenError, f"{cls.__qualname__} falls through to the catch-all"


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__qualname__)
def test_every_error_names_its_own_code(cls: type[LiuhenError]) -> None:
    assert "code" in vars(cls), f"{cls.__qualname__} inherits its parent's code"
    assert cls.code.isidentifier() and cls.code.islower()


def test_codes_are_unique() -> None:
    codes = [cls.code for cls in ERRORS]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (IntakeRefused, 422),
        (ManifestError, 422),
        (EmptyFile, 422),
        (IntegrityMismatch, 422),
        (NotFound, 404),
        (ObjectNotFound, 404),
        (Conflict, 409),
        (ObjectLocked, 409),
        (StoreUnavailable, 503),
        (IndexUnavailable, 503),
        (ObjectStoreError, 500),
        (IndexError_, 500),
        (StorageError, 500),
        (HashMismatch, 500),
        (ProofError, 500),
        (IntegrityError, 500),
        (ProbeError, 500),
        (MediaError, 500),
        (TrackParseError, 500),
        (MetadataError, 500),
        (IngestError, 500),
        (ConfigError, 500),
        (LiuhenError, 500),
    ],
)
def test_statuses(cls: type[LiuhenError], status: int) -> None:
    assert status_for(_instance(cls))[0] == status


def test_the_table_lists_the_most_specific_class_first() -> None:
    """An entry after one of its base classes could never match."""
    for i, (earlier, _, _) in enumerate(STATUS):
        for later, _, _ in STATUS[i + 1 :]:
            assert not issubclass(later, earlier), f"{later.__name__} after {earlier.__name__}"
    assert STATUS[-1][0] is LiuhenError


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ManifestError("bad"), 3),
        (EmptyFile("empty"), 3),
        (IntegrityMismatch("sha"), 3),
        (NotFound("no item"), 4),
        (ObjectNotFound("no key"), 4),
        (HashMismatch("item x", expected="a" * 64, actual="b" * 64), 5),
        (ProofError("root"), 5),
        (StoreUnavailable("down"), 75),
        (IndexUnavailable("down"), 75),
        (ConfigError("bad"), 78),
        (LogKeyMissing("none"), 78),
        (MediaError("ffmpeg"), 1),
    ],
)
def test_exit_codes(error: LiuhenError, code: int) -> None:
    assert exit_code(error) == code


def test_problem_without_instance() -> None:
    doc = problem(NotFound("no item 'x'"))
    assert "instance" not in doc
    assert (doc["status"], doc["title"], doc["detail"]) == (404, "Not found", "no item 'x'")
