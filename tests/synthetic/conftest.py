"""One judge for the whole folder: the OCR engine loads once."""

from __future__ import annotations

import pytest

from xomni_core.synthetic import SceneJudge


@pytest.fixture(scope="session")
def judge() -> SceneJudge:
    return SceneJudge()
