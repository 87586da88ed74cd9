"""completions/ holds the scripts `rsgeo completion SHELL` generates; they must be current."""

import shutil
import subprocess
from pathlib import Path

import pytest

from rsgeo.cli.completion import SCRIPTS

ROOT = Path(__file__).resolve().parents[1] / "completions"
FILES = {"bash": "rsgeo.bash", "zsh": "_rsgeo", "fish": "rsgeo.fish"}


@pytest.mark.parametrize("shell", sorted(FILES))
def test_completion_scripts_are_up_to_date(shell, cli):
    code, out, _ = cli("completion", shell)
    assert code == 0
    assert out == SCRIPTS[shell]()
    assert (ROOT / FILES[shell]).read_text() == out, (
        f"completions/{FILES[shell]} is stale: run `rsgeo completion {shell} > "
        f"completions/{FILES[shell]}`")


def test_scripts_name_every_command(cli):
    from rsgeo.cli.completion import _tree

    commands, _ = _tree()
    for shell in FILES:
        script = SCRIPTS[shell]()
        assert all(c in script for c in commands)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_scripts_parse(shell, tmp_path):
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} not installed")
    f = tmp_path / "s"
    f.write_text(SCRIPTS[shell]())
    flag = ["--no-execute"] if shell == "fish" else ["-n"]
    subprocess.run([exe, *flag, str(f)], check=True)


def test_unknown_shell_is_a_usage_error(cli):
    code, _, _ = cli("completion", "powershell")
    assert code == 2
