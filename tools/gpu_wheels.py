#!/usr/bin/env python3
"""Prepare the wheels an engine needs on a GPU host with no network (issue 17).

    python3 tools/gpu_wheels.py --engine sglang --version 0.5.17 --out .whl
    python3 tools/gpu_wheels.py --engine lmdeploy --version 0.18.0 --out .whl --list   # what it would fetch

Downloads (``pip download --no-deps --only-binary=:all:`` for CPython 3.12 on manylinux x86-64) the engine and
the dependencies the GPU image lacks, as listed in ``tools/gpu_wheels.toml`` ([common] + [engines.NAME.VERSION]),
removes the members the manifest's ``strip`` names from a wheel (its RECORD rewritten to match), splits every file
over ``--piece-mib`` (60 MiB) into ``NAME.partNN`` pieces and groups everything into ``--bundle-mib`` bundles
``OUT/ENGINE-VERSION/bundle-K/``, one per device call (the device tool carries at most 64 MiB a call, the
repository included). ``SHA256SUMS`` beside them lists every whole file, which ``tools/gpu_run.sh`` checks after
joining the pieces. Only wheels from PyPI; nothing is built from source.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = Path(__file__).with_name("gpu_wheels.toml")
PLATFORMS = ("manylinux_2_39_x86_64", "manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
MIB = 1 << 20


@dataclass(frozen=True)
class EngineSet:
    """What one engine version needs: requirement strings (``name==version``) and members to strip."""

    engine: str
    version: str
    packages: tuple[str, ...]
    strip: dict[str, tuple[str, ...]] = field(default_factory=dict)


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def load_manifest(engine: str, version: str, path: Path = MANIFEST) -> EngineSet:
    """The [common] packages plus the engine version's, one version per package (a clash is an error)."""
    data = tomllib.loads(path.read_text())
    versions = data.get("engines", {}).get(engine)
    if versions is None:
        raise SystemExit(f"{path}: no [engines.{engine}]; engines: {', '.join(sorted(data.get('engines', {})))}")
    entry = versions.get(version)
    if entry is None:
        raise SystemExit(f"{path}: no [engines.{engine}.\"{version}\"]; versions: {', '.join(sorted(versions))}")
    pins: dict[str, str] = {}
    for req in [*data.get("common", {}).get("packages", []), *entry.get("packages", [])]:
        name, sep, pinned = req.partition("==")
        if not sep or not pinned:
            raise SystemExit(f"{path}: {req!r} must pin one version (NAME==VERSION)")
        key = canonical(name)
        if key in pins and pins[key] != pinned and req not in entry.get("packages", []):
            continue  # the engine's own pin wins over [common] (e.g. SGLang pins openai)
        pins[key] = pinned
    if canonical(engine) not in pins or pins[canonical(engine)] != version:
        raise SystemExit(f"{path}: [engines.{engine}.\"{version}\"] must list {engine}=={version}")
    strip = {canonical(k.partition("==")[0]): tuple(v) for k, v in entry.get("strip", {}).items()}
    return EngineSet(engine, version, tuple(f"{k}=={v}" for k, v in pins.items()), strip)


def download(reqs: list[str], dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "-d", str(dest)]
    for tag in PLATFORMS:
        cmd += ["--platform", tag]
    subprocess.run([*cmd, *reqs], check=True)


def wheel_name(path: Path) -> str:
    return canonical(path.name.split("-")[0])


def strip_wheel(path: Path, patterns: tuple[str, ...]) -> list[str]:
    """Rewrite the wheel without the members matching ``patterns`` (RECORD updated); the removed names."""
    removed: list[str] = []
    buf = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        for info in src.infolist():
            if any(fnmatch.fnmatch(info.filename, p) for p in patterns):
                removed.append(info.filename)
                continue
            if info.filename == record_name:
                continue
            dst.writestr(info, src.read(info.filename))
        kept = [line for line in src.read(record_name).decode().splitlines()
                if line and line.split(",")[0] not in removed]
        dst.writestr(record_name, "\n".join(kept) + "\n")
    if not removed:
        raise SystemExit(f"{path.name}: strip patterns {list(patterns)} matched nothing (wrong version?)")
    path.write_bytes(buf.getvalue())
    return removed


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def split_file(path: Path, piece_bytes: int) -> list[Path]:
    """``path`` as ``path.part00``, ``part01``, ... of at most ``piece_bytes`` (the original removed); a file
    that fits is returned as is."""
    size = path.stat().st_size
    if size <= piece_bytes:
        return [path]
    pieces = []
    with path.open("rb") as handle:
        for n in range((size + piece_bytes - 1) // piece_bytes):
            piece = path.with_name(f"{path.name}.part{n:02d}")
            piece.write_bytes(handle.read(piece_bytes))
            pieces.append(piece)
    path.unlink()
    return pieces


def join_pieces(folder: Path) -> list[Path]:
    """Join every ``NAME.partNN`` group in ``folder`` into ``NAME`` (pieces removed); the joined files."""
    groups: dict[str, list[Path]] = {}
    for piece in folder.glob("*.part[0-9][0-9]"):
        groups.setdefault(piece.name[: -len(".part00")], []).append(piece)
    joined = []
    for name, pieces in sorted(groups.items()):
        target = folder / name
        with target.open("wb") as out:
            for piece in sorted(pieces):
                out.write(piece.read_bytes())
        for piece in pieces:
            piece.unlink()
        joined.append(target)
    return joined


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sums(path: Path) -> dict[str, str]:
    """``SHA256SUMS`` as {file name: hex digest}."""
    sums = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if digest and name:
            sums[name] = digest
    return sums


def bundle(files: list[Path], budget_bytes: int) -> list[list[Path]]:
    """First-fit-decreasing groups of at most ``budget_bytes`` (a file larger than the budget gets its own)."""
    bundles: list[tuple[int, list[Path]]] = []
    for f in sorted(files, key=lambda p: -p.stat().st_size):
        size = f.stat().st_size
        for i, (used, group) in enumerate(bundles):
            if used + size <= budget_bytes:
                bundles[i] = (used + size, [*group, f])
                break
        else:
            bundles.append((size, [f]))
    return [group for _, group in bundles]


def prepare(spec: EngineSet, out: Path, piece_mib: int, bundle_mib: int, cache: Path | None = None,
            reuse: Path | None = None) -> Path:
    """Download, strip, split and bundle ``spec`` under ``out``; with ``reuse`` (another prepared set's folder),
    wheels that set already carries (same file, same hash) are listed in SHA256SUMS but not bundled again."""
    root = out / f"{spec.engine}-{spec.version}"
    if root.exists():
        shutil.rmtree(root)
    raw = root / "_download"
    raw.mkdir(parents=True)
    if cache is not None:
        have = {wheel_name(p): p for p in cache.glob("*.whl")}
        missing = [r for r in spec.packages if canonical(r.partition("==")[0]) not in have
                   or f"-{r.partition('==')[2]}-" not in have[canonical(r.partition("==")[0])].name]
        for r in spec.packages:
            if r not in missing:
                shutil.copy2(have[canonical(r.partition("==")[0])], raw)
    else:
        missing = list(spec.packages)
    if missing:
        download(missing, raw)
    wheels = sorted(raw.glob("*.whl"))
    got = {wheel_name(w) for w in wheels}
    absent = sorted({canonical(r.partition("==")[0]) for r in spec.packages} - got)
    if absent:
        raise SystemExit(f"not downloaded: {', '.join(absent)}")
    notes: dict[str, list[str]] = {}
    for w in wheels:
        if wheel_name(w) in spec.strip:
            notes[w.name] = strip_wheel(w, spec.strip[wheel_name(w)])
    sums = {w.name: sha256(w) for w in wheels}
    carried = read_sums(reuse / "SHA256SUMS") if reuse is not None else {}
    shared = sorted(n for n, h in sums.items() if carried.get(n) == h)
    for name in shared:
        (raw / name).unlink()
    pieces = [p for w in wheels if w.name not in shared for p in split_file(w, piece_mib * MIB)]
    groups = bundle(pieces, bundle_mib * MIB)
    for k, group in enumerate(groups, start=1):
        dest = root / f"bundle-{k}"
        dest.mkdir()
        for f in group:
            f.rename(dest / f.name)
    raw.rmdir()
    (root / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in sorted(sums.items())))
    (root / "manifest.json").write_text(json.dumps(
        {"engine": spec.engine, "version": spec.version, "packages": list(spec.packages), "stripped": notes,
         "carried_by": {"set": str(reuse), "wheels": shared} if shared else None,
         "bundles": {f"bundle-{k}": sorted(f.name for f in g) for k, g in enumerate(groups, start=1)}},
        indent=2) + "\n")
    return root


def register_checkout(checkout: Path, site: Path) -> Path:
    """Make ``checkout`` (on PYTHONPATH) look installed to importlib.metadata: a dist-info in ``site`` with the
    pyproject's name, version and entry points (pytest11, vllm.general_plugins, sglang.srt.plugins), so pytest
    loads the plugin and the engines load the EPLB patch, with no build backend on the GPU host."""
    project = tomllib.loads((checkout / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    groups = project.get("entry-points", {})
    lines = [f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) for group, entries in groups.items()]
    (info / "entry_points.txt").write_text("\n".join(lines))
    (info / "INSTALLER").write_text("tools/gpu_wheels.py\n")
    (info / "RECORD").write_text("")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine")
    ap.add_argument("--version")
    ap.add_argument("--out", type=Path, default=Path(".whl"))
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--piece-mib", type=int, default=60)
    ap.add_argument("--bundle-mib", type=int, default=48,
                    help="bytes per device call: 64 MiB minus the repository that travels with it")
    ap.add_argument("--cache", type=Path, help="a folder of already downloaded wheels to take first")
    ap.add_argument("--reuse", type=Path, help="a prepared set (OUT/ENGINE-VERSION) whose bundles travel too: "
                    "identical wheels are not bundled twice")
    ap.add_argument("--list", action="store_true", help="print the requirements and exit (no network)")
    ap.add_argument("--join", type=Path, metavar="DIR", help="join the NAME.partNN pieces in DIR and exit")
    ap.add_argument("--register", type=Path, metavar="CHECKOUT",
                    help="write CHECKOUT's dist-info (entry points) into --site and exit")
    ap.add_argument("--site", type=Path)
    args = ap.parse_args(argv)
    if args.join is not None:
        for path in join_pieces(args.join):
            print(f"joined {path}")
        return 0
    if args.register is not None:
        if args.site is None:
            ap.error("--register needs --site")
        print(f"registered {register_checkout(args.register, args.site)}")
        return 0
    if not args.engine or not args.version:
        ap.error("--engine and --version are required")
    spec = load_manifest(args.engine, args.version, args.manifest)
    if args.list:
        print("\n".join(spec.packages))
        return 0
    root = prepare(spec, args.out, args.piece_mib, args.bundle_mib, args.cache, args.reuse)
    for d in sorted(root.glob("bundle-*")):
        size = sum(f.stat().st_size for f in d.iterdir())
        print(f"{d}: {size / MIB:.1f} MiB, {len(list(d.iterdir()))} files")
    print(f"carry one bundle per device call into a folder outside the repository there, then run "
          f"tools/gpu_run.sh (see its header); SHA256SUMS: {root / 'SHA256SUMS'}")
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    raise SystemExit(main())
