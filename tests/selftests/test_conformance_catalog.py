"""The catalogue of API checks is complete, consistent with the fake engine, and documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_dsbench.conformance import all_checks, catalog
from pytest_dsbench.engines.adapters import all_adapters
from pytest_dsbench.testing.fake_engine import FakeConfig
from pytest_dsbench.testing.fake_faults import FAULTS

ROOT = Path(__file__).resolve().parents[2]
CHECKS = all_checks()
# The 55 MUST checks of the research checklist (reference api_conformance.md, section 3).
REFERENCE_MUST = [
    "A01",
    "A03",
    "A05",
    "B01",
    "B02",
    "B03",
    "B04",
    "B06",
    "B07",
    "B08",
    "B10",
    "C01",
    "C02",
    "D01",
    "D02",
    "D04",
    "D05",
    "D06",
    "E01",
    "E02",
    "E03",
    "E04",
    "F01",
    "F02",
    "F03",
    "F05",
    "G01",
    "G02",
    "G03",
    "G04",
    "G05",
    "G06",
    "H02",
    "H03",
    "H04",
    "I01",
    "I02",
    "I05",
    "J01",
    "J02",
    "J05",
    "L01",
    "M01",
    "M02",
    "M05",
    "N01",
    "N02",
    "N03",
    "N05",
    "O01",
    "O03",
    "O05",
    "P01",
    "P02",
    "P06",
]
LIFECYCLE_FAULTS = {"never_healthy", "exit_during_startup", "crash_on_bad_token_ids"}


def test_check_ids_are_unique_and_well_formed() -> None:
    ids = [c.id for c in CHECKS]
    assert len(ids) == len(set(ids))
    for check_id in ids:
        assert re.fullmatch(r"[A-Z]{1,2}\d\d\.[a-z0-9_]+", check_id), check_id
        assert catalog.get(check_id).group in catalog.GROUPS, check_id


def test_every_must_check_of_the_reference_is_implemented_as_must() -> None:
    must = {c.id.split(".")[0] for c in CHECKS if c.severity == "MUST"}
    assert not set(REFERENCE_MUST) - must


@pytest.mark.parametrize("item", CHECKS, ids=str)
def test_every_check_names_a_registered_fault_that_violates_it(item: catalog.Check) -> None:
    assert item.faults, f"{item.id} declares no fake-engine fault, so nothing proves it can fail"
    assert not set(item.faults) - set(FAULTS), f"{item.id} names unregistered faults"


def test_every_fault_breaks_some_check_or_the_lifecycle() -> None:
    used = {f for c in CHECKS for f in c.faults} | LIFECYCLE_FAULTS
    assert sorted(set(FAULTS) - used) == []


def test_a_misspelled_fault_is_refused_by_the_fake_engine() -> None:
    with pytest.raises(ValueError, match=r"unknown fake-engine fault.*'no_dnoe'"):
        FakeConfig(faults=["no_dnoe"])


def test_engine_profiles_declare_known_failures_of_existing_checks_with_links() -> None:
    ids = {c.id for c in CHECKS}
    for name, adapter in all_adapters().items():
        for known in adapter.behaviour.known_failures:
            assert known.check_id in ids, f"{name}: unknown check id {known.check_id}"
            assert known.url.startswith("https://"), f"{name}: {known.check_id} has no upstream link"


def test_check_requirements_are_profile_features() -> None:
    features = set().union(*(a.behaviour.features for a in all_adapters().values())) | {"tools"}
    for item in CHECKS:
        assert set(item.requires) <= features, item.id


def test_the_test_files_cover_every_group() -> None:
    covered = set()
    for path in (ROOT / "pytest_dsbench" / "suite").glob("test_api_*.py"):
        for call in re.findall(r"catalog\.params\(([^)]*)\)", path.read_text(encoding="utf-8")):
            covered |= set(re.findall(r'"([A-Z]+)"', call))
    assert {c.group for c in CHECKS} <= covered


def test_committed_docs_table_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
    assert committed == catalog.markdown(), (
        "docs/conformance.md is stale: run python -m pytest_dsbench.conformance.catalog > docs/conformance.md"
    )


def test_docs_table_lists_every_check_with_its_deviating_engines() -> None:
    text = catalog.markdown()
    for item in CHECKS:
        assert f"`{item.id}`" in text
    assert (
        "lmdeploy: known bug, strict xfail ([link](https://github.com/InternLM/lmdeploy/issues/1631))" in text
    )
