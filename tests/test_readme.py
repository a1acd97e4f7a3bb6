"""The README stays true: its commands, its flag table and its loading snippet."""

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from conftest import make_classifier
from playing_distraction.config import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(python3 -m venv .*)\n```", README)
    assert len(commands) == 2, "the README must keep exactly two set-up commands"
    main, tests = commands
    assert "python train.py" in main and "python evaluate.py" in main
    assert tests.endswith("python -m pytest")
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_every_flag_is_documented():
    flags = {option for action in build_parser()._actions for option in action.option_strings
             if option.startswith("--") and option != "--help"}
    missing = sorted(flag for flag in flags if f"`{flag}`" not in README)
    assert not missing, f"flags missing from the README table: {missing}"


def test_loading_snippet_runs_in_a_plain_python(tmp_path):
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", README, re.S)
                   if "load_model" in block)
    path = re.search(r'load_model\("([^"]+)"\)', snippet).group(1)
    (tmp_path / path).parent.mkdir(parents=True)
    make_classifier(num_classes=10).save(tmp_path / path)
    image = np.zeros((28, 28, 3), np.uint8)
    image[8:20, 6:22] = 200
    cv2.imwrite(str(tmp_path / "shirt.png"), image)
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    label, confidence = done.stdout.split()
    assert 0 <= int(label) < 10 and 0.0 < float(confidence) <= 1.0
