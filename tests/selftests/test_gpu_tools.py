"""tools/gpu_wheels.py and tools/gpu_run.sh (issue 17): the carried-wheel recipe for a GPU host with no network.

No network here: downloads are replaced by a cache of synthetic wheels, and pip installs them with --no-index.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_wheels", TOOLS / "gpu_wheels.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_wheels"] = module
    spec.loader.exec_module(module)
    return module


gw = _load()


def _wheel(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel (METADATA, WHEEL, RECORD) holding ``files``."""
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    members = {
        **files,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{n},{gw.record_hash(d)},{len(d)}\n" for n, d in members.items()) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
        z.writestr(f"{dist}/RECORD", record)
    return path


@pytest.mark.parametrize(("engine", "version"), [("sglang", "0.5.17"), ("lmdeploy", "0.18.0")])
def test_the_manifest_resolves_one_pinned_version_of_each_package(engine: str, version: str) -> None:
    spec = gw.load_manifest(engine, version)
    names = [gw.canonical(r.partition("==")[0]) for r in spec.packages]
    assert len(names) == len(set(names)), "one version of each package"
    assert f"{engine}=={version}" in spec.packages
    assert {"pydantic", "orjson", "openai"} <= set(names), "the project's own needs travel too"
    assert spec.strip, "the unused compiled part is stripped"


def test_the_engine_pin_wins_over_common_and_both_engines_share_xgrammar() -> None:
    sglang, lmdeploy = gw.load_manifest("sglang", "0.5.17"), gw.load_manifest("lmdeploy", "0.18.0")
    assert "openai==2.6.1" in sglang.packages  # SGLang 0.5.17 pins it
    assert "transformers==5.12.1" in sglang.packages and "tokenizers==0.22.2" in sglang.packages
    assert ({r for r in sglang.packages if r.startswith("xgrammar")}
            == {r for r in lmdeploy.packages if r.startswith("xgrammar")})


def test_an_unknown_engine_version_names_the_known_ones() -> None:
    with pytest.raises(SystemExit, match=r"versions: 0\.5\.17"):
        gw.load_manifest("sglang", "9.9")


def test_an_unpinned_requirement_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "m.toml"
    manifest.write_text('[engines.e."1.0"]\npackages = ["e==1.0", "dep"]\n')
    with pytest.raises(SystemExit, match="must pin one version"):
        gw.load_manifest("e", "1.0", manifest)


def test_strip_removes_the_members_and_their_record_lines(tmp_path: Path) -> None:
    whl = _wheel(tmp_path, "kern", "1.0", {"kern/__init__.py": b"", "kern/big.so": b"x" * 1000,
                                           "kern/sm100/ops.so": b"y"})
    removed = gw.strip_wheel(whl, ("kern/big.so", "kern/sm100/*"))
    assert sorted(removed) == ["kern/big.so", "kern/sm100/ops.so"]
    with zipfile.ZipFile(whl) as z:
        assert "kern/big.so" not in z.namelist() and "kern/__init__.py" in z.namelist()
        record = z.read("kern-1.0.dist-info/RECORD").decode()
    assert "big.so" not in record and "sm100" not in record and "kern/__init__.py" in record


def test_strip_patterns_that_match_nothing_are_an_error(tmp_path: Path) -> None:
    whl = _wheel(tmp_path, "kern", "1.0", {"kern/__init__.py": b""})
    with pytest.raises(SystemExit, match="matched nothing"):
        gw.strip_wheel(whl, ("kern/flash_ops*.so",))


def test_split_and_join_round_trip(tmp_path: Path) -> None:
    data = os.urandom(2500)
    path = tmp_path / "big.whl"
    path.write_bytes(data)
    pieces = gw.split_file(path, 1000)
    assert [p.name for p in pieces] == ["big.whl.part00", "big.whl.part01", "big.whl.part02"]
    assert all(p.stat().st_size <= 1000 for p in pieces) and not path.exists()
    assert gw.join_pieces(tmp_path) == [path]
    assert path.read_bytes() == data and not list(tmp_path.glob("*.part*"))


def test_a_file_within_the_piece_size_is_not_split(tmp_path: Path) -> None:
    path = tmp_path / "small.whl"
    path.write_bytes(b"abc")
    assert gw.split_file(path, 1000) == [path]


def test_bundles_stay_within_the_budget(tmp_path: Path) -> None:
    files = []
    for n, size in enumerate([600, 500, 400, 300, 200, 100]):
        f = tmp_path / f"f{n}"
        f.write_bytes(b"x" * size)
        files.append(f)
    groups = gw.bundle(files, 1000)
    assert sorted(f for g in groups for f in g) == sorted(files)
    assert all(sum(f.stat().st_size for f in g) <= 1000 for g in groups)
    assert len(groups) == 3


def _offline_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    cache = tmp_path / "cache"
    cache.mkdir()
    _wheel(cache, "eng", "1.0", {"eng/__init__.py": b"VERSION = '1.0'\n", "eng/huge.so": os.urandom(3000)})
    _wheel(cache, "dep", "2.0", {"dep/__init__.py": os.urandom(1500)})
    _wheel(cache, "shared", "3.0", {"shared/__init__.py": b""})
    manifest = tmp_path / "m.toml"
    manifest.write_text('[common]\npackages = ["shared==3.0"]\n'
                        '[engines.eng."1.0"]\npackages = ["eng==1.0", "dep==2.0"]\n'
                        'strip = { "eng==1.0" = ["eng/huge.so"] }\n')

    def no_network(reqs: list[str], dest: Path) -> None:
        raise AssertionError(f"would download {reqs}")

    monkeypatch.setattr(gw, "download", no_network)
    return cache, manifest


def test_prepare_strips_bundles_and_lists_checksums_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, manifest = _offline_set(tmp_path, monkeypatch)
    spec = gw.load_manifest("eng", "1.0", manifest)
    root = gw.prepare(spec, tmp_path / "out", piece_mib=1, bundle_mib=1, cache=cache)
    sums = gw.read_sums(root / "SHA256SUMS")
    assert sorted(sums) == ["dep-2.0-py3-none-any.whl", "eng-1.0-py3-none-any.whl", "shared-3.0-py3-none-any.whl"]
    carried = {f.name: f for f in root.glob("bundle-*/*")}
    assert set(carried) == set(sums)
    assert all(hashlib.sha256(carried[n].read_bytes()).hexdigest() == h for n, h in sums.items())
    with zipfile.ZipFile(carried["eng-1.0-py3-none-any.whl"]) as z:
        assert "eng/huge.so" not in z.namelist()


def test_reuse_does_not_bundle_a_wheel_another_set_carries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, manifest = _offline_set(tmp_path, monkeypatch)
    other = tmp_path / "other"
    other.mkdir()
    shared = cache / "shared-3.0-py3-none-any.whl"
    (other / "SHA256SUMS").write_text(f"{gw.sha256(shared)}  {shared.name}\n")
    root = gw.prepare(gw.load_manifest("eng", "1.0", manifest), tmp_path / "out", 1, 1, cache, reuse=other)
    assert shared.name in gw.read_sums(root / "SHA256SUMS")
    assert shared.name not in {f.name for f in root.glob("bundle-*/*")}


def test_register_makes_the_checkout_an_installed_distribution_with_its_entry_points(tmp_path: Path) -> None:
    gw.register_checkout(ROOT, tmp_path)
    (dist,) = importlib.metadata.distributions(path=[str(tmp_path)])
    assert dist.metadata["Name"] == "pytest-dsbench"
    groups = {(e.group, e.name): e.value for e in dist.entry_points}
    assert groups[("pytest11", "dsbench")] == "pytest_dsbench.plugin"
    assert groups[("sglang.srt.plugins", "dsbench_eplb")] == "pytest_dsbench.engines.sglang.eplb:register"


def test_gpu_run_stashes_joins_checks_and_installs_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, manifest = _offline_set(tmp_path, monkeypatch)
    root = gw.prepare(gw.load_manifest("eng", "1.0", manifest), tmp_path / "out", 1, 1, cache)
    big = next(root.glob("bundle-*/eng-1.0-py3-none-any.whl"))
    gw.split_file(big, 700)  # a piece split over two calls' bundles must be joined there
    store, site = tmp_path / "store", tmp_path / "site"
    env = {**os.environ, "DSBENCH_WHEEL_STORE": str(store), "DSBENCH_PYTHON": sys.executable}
    run = [str(TOOLS / "gpu_run.sh")]
    for bundle_dir in sorted(root.glob("bundle-*")):
        subprocess.run(["bash", *run, "stash", str(bundle_dir)], check=True, env=env, capture_output=True)
    out = subprocess.run(["bash", *run, "install", str(root / "SHA256SUMS"), str(site)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (site / "eng" / "__init__.py").read_text() == "VERSION = '1.0'\n"
    assert not (site / "eng" / "huge.so").exists()
    assert list(site.glob("pytest_dsbench-*.dist-info/entry_points.txt"))


def test_gpu_run_refuses_a_corrupted_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, manifest = _offline_set(tmp_path, monkeypatch)
    root = gw.prepare(gw.load_manifest("eng", "1.0", manifest), tmp_path / "out", 1, 1, cache)
    store = tmp_path / "store"
    env = {**os.environ, "DSBENCH_WHEEL_STORE": str(store), "DSBENCH_PYTHON": sys.executable}
    for bundle_dir in sorted(root.glob("bundle-*")):
        subprocess.run(["bash", str(TOOLS / "gpu_run.sh"), "stash", str(bundle_dir)], check=True, env=env,
                       capture_output=True)
    victim = store / "dep-2.0-py3-none-any.whl"
    victim.write_bytes(victim.read_bytes()[:-10])
    out = subprocess.run(["bash", str(TOOLS / "gpu_run.sh"), "install", str(root / "SHA256SUMS"),
                          str(tmp_path / "site")], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "checksum mismatch" in out.stderr
