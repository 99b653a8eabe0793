"""The README opens with the two commands users run first; CI runs the second one."""

from __future__ import annotations

import re

from support import REPO


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (REPO / "README.md").read_text())


def test_readme_opens_with_a_main_command_and_a_test_command() -> None:
    main, tests = readme_commands()[:2]
    assert "xomni generate" in main
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    assert readme_commands()[1] in (REPO / ".ci" / "run").read_text()


def test_the_startup_benchmark_times_the_readme_main_command() -> None:
    source = (REPO / "benchmarks" / "startup.py").read_text()
    prompt = re.search(r'^PROMPT = "(.+)"$', source, re.MULTILINE)
    assert prompt is not None
    assert readme_commands()[0].endswith(f'xomni generate "{prompt[1]}"')
