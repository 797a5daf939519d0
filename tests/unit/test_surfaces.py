"""The public surface of the split packages (the httpx habit): ``__all__`` names exactly what the
package exposes, and each name is defined in one of the package's own modules."""

from __future__ import annotations

from types import ModuleType

import pytest

from ingest import media, timeplace

PACKAGES = {"media": media, "timeplace": timeplace}


def _exposed(package: ModuleType) -> set[str]:
    """Public attributes of the package, its topic modules left out."""
    return {
        name
        for name, value in vars(package).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_what_the_package_exposes(name: str) -> None:
    package = PACKAGES[name]
    assert len(set(package.__all__)) == len(package.__all__), "a name listed twice"
    assert set(package.__all__) == _exposed(package)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_is_defined_in_the_package(name: str) -> None:
    package = PACKAGES[name]
    for public in package.__all__:
        value = getattr(package, public)
        if isinstance(value, type) or callable(value):  # constants cannot say where they live
            assert value.__module__.startswith(f"{package.__name__}."), public


def test_the_entry_points_callers_use_are_there() -> None:
    # ingest.jobs, the tests and bench/ call these by the package name.
    assert {"probe", "derive", "make_proxy", "proxy_command", "tool_versions"} <= set(media.__all__)
    assert {"load_track", "read_photo_metadata", "resolve_capture_time", "nearest_fix"} <= set(
        timeplace.__all__
    )
