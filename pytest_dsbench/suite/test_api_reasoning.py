"""N. Reasoning output (DeepSeek-R1).

Each parameter is one check of :mod:`pytest_dsbench.conformance.reasoning`; what it asserts, the engines
known to deviate and the sources are in docs/conformance.md. Known engine bugs become strict xfails
through the ``check`` marker; checks that do not apply to the engine's declared profile skip with the reason.
"""

from __future__ import annotations

import pytest

from pytest_dsbench.conformance import catalog
from pytest_dsbench.conformance.context import ApiContext

pytestmark = pytest.mark.api

# Checks whose verdict on the embedded engine depends on the fixture model emitting exactly one ``</think>``.
MODEL_DEPENDENT = {"N01.reasoning_present_and_separated", "N02.reasoning_no_tag_leak"}


def _params() -> list[object]:
    return [
        pytest.param(*p.values, marks=[*p.marks, pytest.mark.fixture_model], id=p.id) if p.id in MODEL_DEPENDENT
        else p
        for p in catalog.params("N")
    ]


@pytest.mark.parametrize("check_id", _params())
def test_reasoning(check_id: str, api: ApiContext) -> None:
    catalog.run(check_id, api)
