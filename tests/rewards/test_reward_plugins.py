"""The four reference rewards are discovered through entry points and describe themselves
without importing torch or the OCR engine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xomni_core.registry import PluginRegistry

REWARDS = {
    "ocr-text": "OcrTextReward",
    "clip-score": "ClipScoreReward",
    "hpsv2": "HPSv2Reward",
    "vlm-judge": "VlmJudgeReward",
}


@pytest.mark.parametrize(("name", "class_name"), REWARDS.items())
def test_each_reward_is_registered_and_loads_its_implementation(name: str, class_name: str) -> None:
    spec = PluginRegistry.discover(use_environment=False).get("reward", name)
    implementation = spec.load()
    assert implementation.__name__ == class_name
    assert implementation.name == name
    assert implementation.params_class is spec.params


def test_descriptors_and_params_stay_light() -> None:
    code = (
        "import sys\n"
        "from xomni_plugins.rewards import ocr_text, clip_score, hpsv2, vlm_judge\n"
        "for module in (ocr_text, clip_score, hpsv2, vlm_judge):\n"
        "    module.PLUGIN.params()\n"
        "heavy = {'torch', 'transformers', 'rapidocr_onnxruntime', 'onnxruntime'}\n"
        "print(','.join(sorted(heavy & set(sys.modules))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
