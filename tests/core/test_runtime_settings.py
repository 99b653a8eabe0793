"""A pipeline built from Python runs with the runtime settings the command line would apply."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from support import REPO

TINY = REPO / "examples" / "configs" / "tiny-random.yaml"


def test_python_api_sets_up_openmp_threads_and_the_collector_as_the_cli_does(tmp_path: Path) -> None:
    probe = textwrap.dedent(
        """
        import gc, os, sys
        from xomni_core.config import load_config
        from xomni_core.pipelines import TextToImagePipeline
        pipe = TextToImagePipeline.from_config(load_config(sys.argv[1], ["runtime.threads=1"]))
        torch = sys.modules["torch"]
        torch.set_num_threads(2)  # another library's choice; the pipeline's setting wins during a call
        seen = []
        pipe("a red circle", num_inference_steps=1, show_progress=False,
             callback_on_step_end=lambda p, s, t, k: seen.append(torch.get_num_threads()))
        print("POLICY", os.environ.get("OMP_WAIT_POLICY"), "CALL THREADS", sorted(set(seen)),
              "AFTER", torch.get_num_threads(), file=sys.stderr)
        print("COLLECTOR ON", gc.isenabled(), "FROZEN", gc.get_freeze_count() > 100_000, file=sys.stderr)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    result = subprocess.run([sys.executable, "-c", probe, str(TINY)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "POLICY PASSIVE CALL THREADS [1] AFTER 2" in result.stderr
    assert "COLLECTOR ON True FROZEN True" in result.stderr
