"""The log rebuilt from its WORM mirror (leaf bundles vouched for by signed checkpoints).

Pure: the caller lists the bundles and reads the checkpoints (from object storage, from an
export package, from anywhere) and hands them over; nothing here does I/O of its own. A bundle
``first-last`` is taken if, appended to what was rebuilt so far, it gives the root that a
signed checkpoint of size ``last + 1`` holds; other versions of the same bundle (bytes someone
put over it, another log's) are passed over. From each position the furthest checkpoint is
tried first, so a bundle left by a publish that failed after writing it is stepped over.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from integrity.errors import IntegrityError, ProofError
from integrity.merkle import MerkleTree, leaf_hash
from integrity.note import Checkpoint, Verifier, open_note, split_note

__all__ = [
    "BundleVersion",
    "MirrorWalk",
    "SignedHead",
    "bundle_lines",
    "read_checkpoint",
    "rebuild",
]


@dataclass(frozen=True)
class SignedHead:
    """A checkpoint that verified (or was taken unverified), and when it was made."""

    checkpoint: Checkpoint
    made: datetime | None
    """When it was signed (or stored): the bundle written closest to it is tried first."""


@dataclass(frozen=True)
class BundleVersion:
    """One stored version of a leaf bundle ``first-last`` (one leaf's data per line)."""

    first: int
    last: int
    name: str
    """Where it came from, for messages (``key@version``)."""
    modified: datetime | None
    load: Callable[[], bytes | None]
    """Its bytes, or None when they cannot be read (it is then passed over)."""


def bundle_lines(data: bytes, count: int) -> list[str] | None:
    """The ``count`` leaf lines of a bundle, or None if it does not hold exactly that many."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.split("\n")
    if lines[-1] != "" or len(lines) - 1 != count:
        return None
    return lines[:-1]


def read_checkpoint(note: bytes, verifier: Verifier | None) -> Checkpoint | None:
    """The checkpoint in ``note`` (signed by ``verifier`` when given), or None."""
    try:
        text = note.decode("utf-8")
        body = open_note(text, [verifier]).text if verifier else split_note(text)[0]
        return Checkpoint.parse(body)
    except (UnicodeDecodeError, IntegrityError):
        return None


class MirrorWalk:
    """Rebuild the log from bundles, taking only what signed checkpoints vouch for."""

    def __init__(
        self,
        bundles: Iterable[BundleVersion],
        signed: Mapping[int, SignedHead],
        *,
        keep_lines: bool = False,
    ) -> None:
        self.signed = signed
        self.keep_lines = keep_lines
        self.tree = MerkleTree()
        self.lines: list[str] = []
        self.taken: list[tuple[int, int, BundleVersion]] = []
        """(first index, end, version) of each bundle taken, in order."""
        self._starting: dict[int, dict[int, list[BundleVersion]]] = {}
        for b in bundles:
            self._starting.setdefault(b.first, {}).setdefault(b.last + 1, []).append(b)
        self._cached: tuple[int, list[str]] = (-1, [])

    def run(self) -> MirrorWalk:
        while True:
            options = sorted(self._starting.get(self.tree.size, {}).items(), key=lambda o: -o[0])
            for end, versions in options:
                if end in self.signed and self._take(versions, self.signed[end]):
                    break
            else:
                return self

    def _take(self, candidates: Sequence[BundleVersion], head: SignedHead) -> bool:
        made = head.made or datetime.now(UTC)

        def distance(v: BundleVersion) -> float:
            # The bundle was written just before its checkpoint: try the closest first.
            return abs((v.modified - made).total_seconds()) if v.modified else float("inf")

        at, want = self.tree.size, head.checkpoint
        for v in sorted(candidates, key=distance):
            data = v.load()
            lines = bundle_lines(data, want.size - at) if data is not None else None
            if lines is None:
                continue
            for line in lines:
                self.tree.append(leaf_hash(line.encode()))
            if self.tree.root() == want.root_hash:
                self.taken.append((at, want.size, v))
                if self.keep_lines:
                    self.lines += lines
                return True
            self.tree = MerkleTree.from_leaf_hashes(self.tree.leaf(i) for i in range(at))
        return False

    def line(self, idx: int) -> str | None:
        """Leaf ``idx`` as the bundles taken hold it (loads its bundle again, once)."""
        if not 0 <= idx < self.tree.size:
            return None
        if self.keep_lines:
            return self.lines[idx]
        at, end, v = self.taken[bisect.bisect_right([t[0] for t in self.taken], idx) - 1]
        if self._cached[0] != at:
            data = v.load()
            self._cached = (at, (bundle_lines(data, end - at) if data is not None else None) or [])
        lines = self._cached[1]
        return lines[idx - at] if idx - at < len(lines) else None


def rebuild(
    checkpoints: Iterable[tuple[bytes, datetime | None]],
    bundles: Iterable[BundleVersion],
    *,
    verifier: Verifier | None = None,
    origin: str | None = None,
) -> list[str]:
    """The log's leaf data, in order, from its mirror alone.

    ``checkpoints`` are stored note versions (bytes, when stored). With ``verifier`` only
    checkpoints it signed count; without it they are taken unverified, and two different
    checkpoints of one size are refused as ambiguous. Raises ProofError when the bundles do
    not reach the latest checkpoint.
    """
    signed: dict[int, SignedHead] = {}
    for note, made in checkpoints:
        cp = read_checkpoint(note, verifier)
        if cp is None or (origin is not None and cp.origin != origin):
            continue
        other = signed.get(cp.size)
        if other is not None and other.checkpoint.root_hash != cp.root_hash:
            who = "the log key" if verifier else "unverified notes (give the log key)"
            raise ProofError(f"two checkpoints of size {cp.size} by {who} differ")
        signed[cp.size] = SignedHead(cp, made)
    walk = MirrorWalk(bundles, signed, keep_lines=True).run()
    latest = max(signed, default=0)
    if walk.tree.size < latest:
        raise ProofError(
            f"the leaf bundles rebuild {walk.tree.size} leaves, checkpoint {latest} was signed"
        )
    return walk.lines
