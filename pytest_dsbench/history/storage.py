"""The history folder: one sub-folder per engine and hardware profile, pytest-benchmark's file layout inside.

Layout (``--dsbench-storage``, default ``.benchmarks``)::

    .benchmarks/
      vllm-va16/                        <engine>-<hw>   (va16/tp32-pp2 becomes va16+tp32-pp2)
        Linux-CPython-3.11-64bit/       pytest-benchmark's machine id
          0001_<commit>_<YYYYmmdd_HHMMSS>_<token>.json
          0002_...

Why this layout: ``pytest-benchmark --storage .benchmarks/vllm-va16 list|compare`` reads it unchanged, and a
folder per engine and hw keeps runs that must not be compared apart. Unlike pytest-benchmark, lookups here
search every machine-id folder, so upgrading the client's Python does not lose the baseline.

Safety: a run is written to a temporary file and fsynced; then, holding an advisory lock (``.dsbench.lock``)
while it picks the next number, it is *linked* to its final name, which fails if the name exists. Two runs
saving into one folder at once therefore both land, under different numbers, and a reader never sees a torn
file; an interrupted run leaves at most a ``.tmp`` file that every reader ignores.
Unreadable files are skipped with a warning, so one bad file never hides the rest of the history.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_dsbench.errors import DsbenchUsageError
from pytest_dsbench.history.document import StoredRun, machine_id, parse

RUN_GLOB = "[0-9][0-9][0-9][0-9]_*.json"
_MAX_SAVE_ATTEMPTS = 10_000


#: A run reference or storage folder the history cannot use (a one-line usage error).
HistoryError = DsbenchUsageError


def folder_name(engine: str, hw: str) -> str:
    """``<engine>-<hw>`` with the deployment separator made file-name safe."""
    return f"{engine}-{hw.replace('/', '+')}"


def run_folder(root: Path, engine: str, hw: str) -> Path:
    return root / folder_name(engine, hw)


def storage_disabled(value: str) -> bool:
    """``--dsbench-storage none`` (or off/false/0) turns saving off."""
    return value.strip().lower() in ("", "none", "off", "false", "0", "no")


# -- writing -------------------------------------------------------------------------------------------------
def run_name(commit: str, when: _dt.datetime) -> str:
    """``<commit12>_<YYYYmmdd_HHMMSS>_<token>``: pytest-benchmark's autosave name plus a collision-proof
    token."""
    safe_commit = re.sub(r"[^A-Za-z0-9]", "", commit)[:12] or "unversioned"
    return f"{safe_commit}_{when.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(2)}"


def _numbers(folder: Path) -> list[int]:
    out = []
    for path in folder.glob(f"*/{RUN_GLOB}"):
        head = path.name.split("_", 1)[0]
        if head.isdigit():
            out.append(int(head))
    return out


def _link_exclusive(tmp: Path, final: Path) -> bool:
    """Give ``tmp``'s content the name ``final`` unless that name exists; True on success."""
    try:
        os.link(tmp, final)
        return True
    except FileExistsError:
        return False
    except OSError:
        # File systems without hard links: reserve the name, then replace the reservation atomically.
        try:
            fd = os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        os.close(fd)
        os.replace(tmp, final)
        return True


@contextlib.contextmanager
def _numbering_lock(folder: Path) -> Iterator[None]:
    """Serialise run numbering among savers of one folder (advisory lock file; no-op where unsupported)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(folder / ".dsbench.lock", "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except OSError:
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def save(folder: Path, name: str, doc: dict[str, Any]) -> Path:
    """Write ``doc`` as the next numbered run in ``folder``; returns the file.

    Safe against concurrent savers: numbers are taken under a lock, and the final name is claimed with an
    exclusive link, never overwritten.
    """
    sub = folder / machine_id()
    sub.mkdir(parents=True, exist_ok=True)
    payload = (json.dumps(doc, indent=2, sort_keys=False, default=str, ensure_ascii=True) + "\n").encode()
    fd, tmp_name = tempfile.mkstemp(prefix=".dsbench-", suffix=".tmp", dir=sub)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        with _numbering_lock(folder):
            number = max(_numbers(folder), default=0) + 1
            for _ in range(_MAX_SAVE_ATTEMPTS):
                final = sub / f"{number:04d}_{name}.json"
                if _link_exclusive(tmp, final):
                    _fsync_dir(sub)
                    return final
                number += 1
        raise HistoryError(f"could not find a free run number in {sub}; is the folder writable?")
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- reading -------------------------------------------------------------------------------------------------
def load(path: Path) -> StoredRun:
    """Read one stored run; a missing or malformed file is a one-line :class:`HistoryError`."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HistoryError(f"stored run {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HistoryError(
            f"stored run {path} is not readable JSON ({exc}); delete or fix the file"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise HistoryError(f"stored run {path} is not a pytest-benchmark result file (no 'benchmarks' list)")
    return parse(path, doc)


def run_files(folder: Path) -> list[Path]:
    """Run files of one ``<engine>-<hw>`` folder, oldest first (by number, then modification time)."""
    files = [p for p in folder.glob(f"*/{RUN_GLOB}") if p.is_file()]

    def order(path: Path) -> tuple[int, float]:
        head = path.name.split("_", 1)[0]
        return (int(head) if head.isdigit() else 0, path.stat().st_mtime)

    return sorted(files, key=order)


def iter_runs(folder: Path, warnings: list[str] | None = None) -> Iterator[StoredRun]:
    """Every readable run of a folder, oldest first; unreadable files are reported in ``warnings``."""
    for path in run_files(folder):
        try:
            yield load(path)
        except HistoryError as exc:
            if warnings is not None:
                warnings.append(f"skipped {path}: {exc}")


def folders(root: Path) -> list[Path]:
    """The ``<engine>-<hw>`` folders under a storage root that hold at least one run."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob(f"*/{RUN_GLOB}")))


def _describe(folder: Path) -> str:
    files = run_files(folder)
    if not files:
        return f"{folder} holds no stored runs"
    names = ", ".join(p.stem.split("_", 1)[0] for p in files[-8:])
    return f"stored runs in {folder}: {names} (newest last)"


def resolve(root: Path, folder: Path, ref: str) -> StoredRun:
    """The run ``ref`` names: ``latest`` (``latest~1`` is the one before), a number (``3`` / ``0003``), a
    run-id prefix, ``<engine>-<hw>/REF`` (another folder of the same storage root) or a path to a run file.

    ``latest`` skips runs that were interrupted and files that cannot be read.
    """
    ref = ref.strip()
    candidate = Path(ref)
    if ref.endswith(".json") and candidate.is_file():
        return load(candidate)
    if "/" in ref and not ref.endswith(".json"):
        sub, _, rest = ref.partition("/")
        other = root / sub
        if not other.is_dir():
            known = ", ".join(p.name for p in folders(root)) or "(none)"
            raise HistoryError(f"--dsbench-compare {ref!r}: no folder {other}. Folders in {root}: {known}.")
        return resolve(root, other, rest)
    back = 0
    if ref.startswith("latest~") and ref[7:].isdigit():
        ref, back = "latest", int(ref[7:])
    if ref == "latest":
        for path in reversed(run_files(folder)):
            try:
                run = load(path)
            except HistoryError:
                continue
            if run.interrupted:
                continue
            if back == 0:
                return run
            back -= 1
        raise HistoryError(
            f"no stored run to compare with: {_describe(folder)}. Run once without "
            "--dsbench-compare to record a baseline, or check --dsbench-storage/--engine/--hw."
        )
    files = run_files(folder)
    matches = []
    if ref.isdigit():
        matches = [
            p for p in files if p.name.split("_", 1)[0].isdigit() and int(p.name.split("_", 1)[0]) == int(ref)
        ]
    if not matches:
        matches = [p for p in files if p.stem.startswith(ref)]
    if not matches:
        raise HistoryError(
            f"no stored run {ref!r}: {_describe(folder)}. Give a number, a run id, 'latest' "
            "or a path to a run file."
        )
    if len(matches) > 1:
        listed = ", ".join(str(p.relative_to(folder)) for p in matches[:5])
        raise HistoryError(f"run reference {ref!r} is ambiguous in {folder}: {listed}. Give the full run id.")
    return load(matches[0])


#: Most earlier runs the run-to-run noise test looks at.
HISTORY_RUNS = 20


def comparable_history(baseline: StoredRun, limit: int = HISTORY_RUNS) -> list[StoredRun]:
    """Earlier runs of the baseline's folder (oldest first, the baseline last) with the same engine, hardware
    profile and model, not interrupted: the run-to-run noise the regression gate measures changes against."""
    from pytest_dsbench.history.provenance import mismatches

    folder = baseline.path.parent.parent
    earlier = []
    for run in iter_runs(folder):
        if run.path == baseline.path:
            break
        if run.interrupted or run.number > baseline.number or mismatches(baseline.provenance, run.provenance):
            continue
        earlier.append(run)
    return [*earlier[-(limit - 1) :], baseline] if limit > 1 else [baseline]
