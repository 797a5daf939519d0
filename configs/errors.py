"""Errors of the configs package: ConfigError (settings missing, malformed or unsafe), and
SystemRefused (the operating system refused what a command needed), both under LiuhenError."""

from __future__ import annotations

from integrity.errors import LiuhenError


class ConfigError(LiuhenError):
    """Settings are missing, malformed, or unsafe for the chosen profile."""

    code = "config_error"


class SystemRefused(LiuhenError):
    """The operating system refused what a command needed (a home that is a file, a folder
    that cannot be written): said plainly at the edge, with ``--json`` as the error."""

    code = "os_error"
