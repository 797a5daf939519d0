"""Which log key a process signs with, by profile.

Every process of a deployment must sign with one key, or two machines would publish two logs.
So the production profile never makes a key: it takes ``LIUHEN_LOG__KEY`` (the signer key
text) or the file at ``log.key_path`` and refuses to start without one; ``liuhen log init-key``
makes that file once, explicitly. The embedded profile (one machine) makes its key on first
start, as before.
"""

from __future__ import annotations

from pathlib import Path

from configs.settings import Settings
from ingest.errors import LogKeyExists, LogKeyMissing
from integrity.log import LogKey, create_key, load_key, load_or_create_key, parse_key


def load_log_key(settings: Settings) -> LogKey:
    name = settings.log.origin
    if settings.log.key is not None:
        return parse_key(settings.log.key.get_secret_value(), name=name, where="LIUHEN_LOG__KEY")
    path = settings.log_key_path
    if settings.profile == "embedded":
        return load_or_create_key(path, name=name)
    if not path.is_file():
        raise LogKeyMissing(
            f"the {settings.profile} profile needs an existing log key: none at {path} and "
            "LIUHEN_LOG__KEY is not set. Make one once with `liuhen log init-key -o PATH` and "
            "give every process of the deployment that same key (log.key_path or "
            "LIUHEN_LOG__KEY)"
        )
    return load_key(path, name=name)


def init_key(path: Path, *, origin: str) -> LogKey:
    """Make a new log key at ``path`` (mode 0600); never overwrites one."""
    try:
        return create_key(path, name=origin)
    except FileExistsError:
        raise LogKeyExists(f"{path} already exists: a log key is never overwritten") from None
