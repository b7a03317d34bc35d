"""Where an accuracy data set comes from: a local folder (offline), the project's bundled sets, or EvalScope's
own download.

- Local question/answer sets (benchmark ``general_qa``): ``NAME.jsonl`` of ``{"query": ..., "response": ...}``
  lines (``question``/``answer`` and an optional ``id`` are accepted too), looked up in
  ``--dsbench-datasets DIR`` (``DIR/NAME.jsonl`` or ``DIR/<dataset>/NAME.jsonl``), then in the project's
  ``fixtures/datasets/evalscope``.
- EvalScope's built-in benchmarks (gsm8k, math_500, aime24, gpqa_diamond, mmlu_pro, ceval, ...): with
  ``--dsbench-datasets DIR`` the folder ``DIR/<benchmark>`` (EvalScope's data for it, e.g. from
  ``modelscope download --dataset ...``) and no network; without it EvalScope downloads the data itself.

Every source has a fingerprint (a content digest for local data) that goes into the result-cache key, so an
edited data file is never scored from a stale cache entry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pytest_dsbench.accuracy.errors import AccuracyError
from pytest_dsbench.packaged import data_dir

#: Bytes hashed per file of a local built-in benchmark folder (large folders stay cheap to fingerprint).
FINGERPRINT_BYTES_PER_FILE = 1 << 20


@dataclass(frozen=True)
class DataSource:
    """Where EvalScope reads one data set from."""

    local_path: Path | None
    fingerprint: str
    description: str

    @property
    def offline(self) -> bool:
        """True when EvalScope must not touch the network for this data set."""
        return self.local_path is not None


def bundled_dirs() -> list[Path]:
    """The project's own local QA sets: the copy in the wheel, else the source checkout's."""
    return [data_dir("datasets") / "evalscope"]


def validate_qa_file(path: Path) -> int:
    """Check a general_qa ``.jsonl`` file line by line; return its number of items."""
    count = 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AccuracyError(f"cannot read accuracy data {path}: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AccuracyError(f"{path}:{number}: not a JSON object ({exc.msg}). Each line must be "
                                '{"query": "...", "response": "..."}.') from None
        if not isinstance(item, dict) or not (item.get("query") or item.get("question")) or \
                (item.get("response") is None and item.get("answer") is None):
            got = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise AccuracyError(f"{path}:{number}: needs a 'query' (or 'question') and a 'response' (or "
                                f"'answer'); got keys {got}.")
        count += 1
    if count == 0:
        raise AccuracyError(f"accuracy data {path} has no items; add {{\"query\", \"response\"}} lines.")
    return count


def _qa_source(dataset: str, name: str, datasets_dir: Path | None) -> DataSource:
    candidates = []
    if datasets_dir is not None:
        candidates += [datasets_dir / f"{name}.jsonl", datasets_dir / dataset / f"{name}.jsonl"]
    candidates += [folder / f"{name}.jsonl" for folder in bundled_dirs()]
    for path in candidates:
        if path.is_file():
            items = validate_qa_file(path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            return DataSource(local_path=path.parent.resolve(), fingerprint=f"jsonl:{digest}",
                              description=f"{path} ({items} items)")
    looked = ", ".join(str(p) for p in candidates)
    raise AccuracyError(
        f"accuracy data set {dataset!r} not found: no {name}.jsonl in {looked}. Pass --dsbench-datasets DIR "
        f"with {name}.jsonl ({{\"query\", \"response\"}} lines) or fix [accuracy.{dataset}] subset."
    )


def _folder_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(str(path.stat().st_size).encode())
        with path.open("rb") as handle:
            digest.update(handle.read(FINGERPRINT_BYTES_PER_FILE))
    return digest.hexdigest()[:16]


def _builtin_source(dataset: str, benchmark: str, datasets_dir: Path | None) -> DataSource:
    if datasets_dir is None:
        return DataSource(local_path=None, fingerprint=f"evalscope-download:{benchmark}",
                          description=f"EvalScope's download of {benchmark}")
    for folder in (datasets_dir / benchmark, datasets_dir / dataset):
        if folder.is_dir() and any(p.is_file() for p in folder.rglob("*")):
            return DataSource(local_path=folder.resolve(), fingerprint=f"dir:{_folder_fingerprint(folder)}",
                              description=f"{folder} (local, offline)")
    raise AccuracyError(
        f"--dsbench-datasets {datasets_dir} has no folder {benchmark!r} with data for [accuracy.{dataset}]. "
        f"Put EvalScope's {benchmark} data there (e.g. modelscope download --dataset <id> --local_dir "
        f"{datasets_dir / benchmark}) or drop --dsbench-datasets to let EvalScope download it."
    )


def resolve_data(dataset: str, benchmark: str, subset: str | None, datasets_dir: Path | None, *,
                 local_qa: bool) -> DataSource:
    """Find the data for ``[accuracy.<dataset>]``; a one-line :class:`AccuracyError` says where it looked."""
    if datasets_dir is not None and not datasets_dir.is_dir():
        raise AccuracyError(f"--dsbench-datasets {datasets_dir} is not a folder.")
    if local_qa:
        return _qa_source(dataset, subset or dataset, datasets_dir)
    return _builtin_source(dataset, benchmark, datasets_dir)
