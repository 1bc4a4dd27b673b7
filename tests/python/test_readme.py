"""The README's Python example runs exactly as written (from a scratch directory holding a
link to models/)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO


def test_readme_python_example_runs(tmp_path):
    text = (REPO / "README.md").read_text()
    section = text.split("## Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "expected one python example in the README's Python section"
    (tmp_path / "models").symlink_to(REPO / "models")
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    proc = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "hello.png").stat().st_size > 0
    assert "(64, 64)" in proc.stdout
