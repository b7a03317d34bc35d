"""L. Structured outputs.

Each parameter is one check of :mod:`pytest_dsbench.conformance.structured`; what it asserts, the engines
known to deviate and the sources are in docs/conformance.md. Known engine bugs become strict xfails
through the ``check`` marker; checks that do not apply to the engine's declared profile skip with the reason.
"""

from __future__ import annotations

import pytest

from pytest_dsbench.conformance import catalog
from pytest_dsbench.conformance.context import ApiContext

pytestmark = pytest.mark.api


@pytest.mark.parametrize("check_id", catalog.params("L"))
def test_structured_output(check_id: str, api: ApiContext) -> None:
    catalog.run(check_id, api)
