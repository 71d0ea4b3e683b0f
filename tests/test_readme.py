"""The README's "Using it" section runs as printed, from a fresh directory: the sample clip, the
command line on it, and the Python example on the same file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def using_it_blocks() -> tuple[list[str], str]:
    """The section's local shell commands (continuation lines joined) and its Python example."""
    section = (ROOT / "README.md").read_text().split("## Using it", 1)[1].split("\n### ", 1)[0]
    shell = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [re.sub(r"\s*#.*$", "", c, flags=re.M).strip() for c in shell.replace("\\\n", " ").splitlines()]
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return [c for c in commands if c and "s3://" not in c], python


def test_the_readme_examples_run_as_printed(tmp_path):
    commands, python = using_it_blocks()
    assert len(commands) == 2 and "zoo sample" in commands[0] and "generate" in commands[1]
    venv_bin = str(Path(sys.executable).parent)  # the README's .venv/bin
    for command in commands:
        ran = subprocess.run(command.replace(".venv/bin", venv_bin), shell=True, cwd=tmp_path,
                             capture_output=True, text=True, timeout=180)
        assert ran.returncode == 0, f"{command}: {ran.stderr[-2000:]}"
        assert "generate" not in command or ran.stdout.strip(), f"{command} printed no answer"
    assert (tmp_path / "clip.mp4").is_file()
    ran = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert ran.returncode == 0, ran.stderr[-2000:]
    answer, streamed = ran.stdout.splitlines()[:2]
    assert answer.rsplit(" ", 1)[0] and float(answer.rsplit(" ", 1)[1]) >= 0  # the text, then tau
    assert streamed.strip()
