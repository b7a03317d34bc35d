"""M. Tool calling (DeepSeek-V3/R1 tool-call format, the engine's tool parser).

Each parameter is one check of :mod:`pytest_dsbench.conformance.tools`; what it asserts, the engines
known to deviate and the sources are in docs/conformance.md. Known engine bugs become strict xfails
through the ``check`` marker; checks that do not apply to the engine's declared profile skip with the reason.
"""

from __future__ import annotations

import pytest

from pytest_dsbench.conformance import catalog
from pytest_dsbench.conformance.context import ApiContext

pytestmark = pytest.mark.api


@pytest.mark.parametrize("check_id", catalog.params("M"))
def test_tool_calling(check_id: str, api: ApiContext) -> None:
    catalog.run(check_id, api)
