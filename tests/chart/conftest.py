"""Renderings every chart test without a cluster shares: the pinned helm, and the chart
rendered with each value set of tests/chart/values.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.values import VALUE_SETS, render, with_namespace
from tests.kit.tools import find_tool


@pytest.fixture(scope="session")
def helm() -> str:
    return find_tool("helm")


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(
    request: pytest.FixtureRequest, helm: str, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    values = with_namespace(VALUE_SETS[request.param], "health-risk-mlops")
    return render(helm, values, tmp_path_factory.mktemp(request.param))
