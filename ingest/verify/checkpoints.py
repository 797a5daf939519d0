"""Checkpoints in a run: each row's signed note (or its WORM copy), its root against the
rebuilt tree, each one consistent with the one before, and the end of the log."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from ingest.verify.log import Audit, diff, key_name, signers
from integrity.errors import IntegrityError
from integrity.merkle import verify_consistency
from integrity.mirror import SignedHead
from integrity.note import Checkpoint, open_note
from storage.tables import Checkpoint as CheckpointRow
from storage.verify_queries import log_end


def open_checkpoint(audit: Audit, note: str) -> Checkpoint | str:
    """The checkpoint if ``note`` verifies with the log key, else why not."""
    try:
        return Checkpoint.parse(open_note(note, [audit.verifier]).text)
    except IntegrityError as e:
        return f"{e} (signed by {signers(note)}; the log key is {key_name(audit.verifier)})"


def signed_checkpoints(
    audit: Audit, rows: Sequence[CheckpointRow], mirrored: Callable[[CheckpointRow], str | None]
) -> list[SignedHead]:
    """Each checkpoint row's note, or its mirrored copy (``mirrored``) if the row's is bad."""
    signed: list[SignedHead] = []
    verified = 0
    for row in rows:
        opened = open_checkpoint(audit, row.note)
        if isinstance(opened, str):
            audit.fail(None, "checkpoint_signature", f"checkpoint {row.size}: {opened}")
        copy = mirrored(row)
        if isinstance(opened, str) and copy is not None:
            opened = open_checkpoint(audit, copy)  # the WORM copy may still be good
        if isinstance(opened, str):
            continue
        verified += 1
        if opened.origin != audit.rt.settings.log.origin:
            audit.fail(
                None,
                "checkpoint_origin",
                f"checkpoint {row.size} is for {opened.origin!r}, "
                f"the log is {audit.rt.settings.log.origin!r}",
            )
            continue
        diffs = diff(
            {"size": row.size, "root": row.root_hash.hex()},
            {"size": opened.size, "root": opened.root_hash.hex()},
        )
        if diffs:
            audit.fail(None, "checkpoint_root", f"checkpoint row vs its signed note: {diffs}")
        signed.append(SignedHead(opened, row.created_at))
    if rows and not verified:
        audit.fail(
            None,
            "log_key",
            f"the log key {key_name(audit.verifier)} verifies none of the {len(rows)} "
            f"checkpoints; they are signed by {signers(rows[-1].note)}",
        )
    return signed


def check_checkpoints(audit: Audit, signed: Iterable[SignedHead]) -> None:
    """Each signed root against the rebuilt tree, each one consistent with the one before."""
    previous: Checkpoint | None = None
    previous_ok = True
    for s in signed:
        cp = s.checkpoint
        if cp.size > audit.size:
            continue  # signed after this run read the log size: checked at the end
        computed = audit.tree.root(cp.size)
        root_ok = computed == cp.root_hash
        if not root_ok:
            where = ""
            if previous_ok:
                since = previous.size if previous is not None else 0
                where = f"; the rows differ in leaves {since}..{cp.size - 1}"
            audit.fail(
                None,
                "checkpoint_root",
                f"checkpoint {cp.size} signs root {cp.root_hash.hex()}, "
                f"the leaf rows give {computed.hex()}{where}",
            )
        mirrored = audit.mirror is not None and audit.mirror.size >= cp.size
        # Past a bad root the rows prove nothing more; the mirror may still.
        if previous is not None and previous.size > 0 and (previous_ok or mirrored):
            problem = _inconsistent(audit, previous, cp)
            if problem:
                audit.fail(
                    None,
                    "checkpoint_consistency",
                    f"checkpoint {cp.size} does not extend checkpoint {previous.size}: {problem}",
                )
        previous, previous_ok = cp, root_ok


def _inconsistent(audit: Audit, old: Checkpoint, new: Checkpoint) -> str | None:
    """Why no proof from our trees shows ``new`` extends ``old`` (None if one does)."""
    problem = "no tree holds both"
    for tree in (audit.tree, audit.mirror):
        if tree is None or tree.size < new.size:
            continue
        try:
            verify_consistency(
                size1=old.size,
                size2=new.size,
                proof=tree.consistency_proof(old.size, new.size),
                root1=old.root_hash,
                root2=new.root_hash,
            )
        except IntegrityError as e:
            problem = str(e)
        else:
            return None
    return problem


def check_end(audit: Audit, signed: Sequence[SignedHead]) -> bool:
    """log_state against the rows, and nothing (checkpoint or index row) beyond the log's
    end. True when the end of the log can be trusted, so this run may append to it.

    An index row pointing past the end is a truncated log even where no checkpoint
    covered it.
    """
    with audit.rt.sessions() as session:
        end = log_end(session)
    problems = []
    if end.rows != end.size or (end.last is not None and end.last != end.size - 1):
        problems.append(f"log_state says {end.size} leaves; {end.rows} rows, last {end.last}")
    if end.pointed >= end.size:
        problems.append(f"the index points at leaf {end.pointed}; the log has {end.size}")
    problems += [
        f"checkpoint {s.checkpoint.size} was signed but the log has {end.size} leaves"
        for s in signed
        if s.checkpoint.size > end.size
    ]
    for problem in problems:
        audit.fail(None, "log_size", problem)
    return not problems
