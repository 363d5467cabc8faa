"""The command line, as a user (or a script) drives it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from charstudio.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_new_then_import_then_reimport(capsys, make_png, tmp_path: Path) -> None:
    project = tmp_path / "lady"
    code, out, _ = run_cli(capsys, "new", str(project), "--name", "French Lady", "--json")
    assert code == 0
    assert json.loads(out) == {
        "project": str(project.resolve()),
        "name": "French Lady",
        "token": "frenchlady",
    }
    for n in range(3):
        make_png(tmp_path / "out" / f"{n}.png", seed=n)
    (tmp_path / "out" / "broken.png").write_bytes(b"")
    code, out, _ = run_cli(capsys, "import", str(project), str(tmp_path / "out"), "--json")
    report = json.loads(out)
    assert code == 0
    assert (report["added"], report["duplicates"]) == (3, 0)
    assert report["failed"][0]["path"].endswith("broken.png")
    assert "empty" in report["failed"][0]["error"]
    code, out, _ = run_cli(capsys, "import", str(project), str(tmp_path / "out"), "--json")
    assert (json.loads(out)["added"], json.loads(out)["duplicates"]) == (0, 3)

    code, out, _ = run_cli(capsys, "list", str(project), "--json")
    rows = json.loads(out)
    assert [r["seed"] for r in rows] == [0, 1, 2]
    assert all(r["flag"] == "none" and not r["missing"] for r in rows)


def test_new_with_token(capsys, tmp_path: Path) -> None:
    _code, out, _ = run_cli(
        capsys, "new", str(tmp_path / "p"), "--name", "Lady", "--token", "fr3nchl4dy", "--json"
    )
    assert json.loads(out)["token"] == "fr3nchl4dy"


def test_errors_name_the_folder_and_exit_2(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "import", str(tmp_path / "nowhere"), str(tmp_path))
    assert code == 2
    assert "not a charstudio project" in err and "nowhere" in err


def test_info_prints_parameters(capsys, make_png, tmp_path: Path) -> None:
    png = make_png(tmp_path / "a.png", seed=4240233169)
    code, out, _ = run_cli(capsys, "info", str(png), "--json")
    assert code == 0
    [info] = json.loads(out)
    assert info["seed"] == 4240233169
    assert info["steps"] == 30
    assert info["sampler"] == "DPM++ 2M"
    assert info["schedule_type"] == "Karras"
    assert info["cfg_scale"] == 7
    assert (info["width"], info["height"]) == (512, 512)
    assert info["model"] == "v1-5-pruned-emaonly"
    assert info["model_hash"] == "6ce0161689"
    assert info["negative_prompt"] == "jewellery, clothes, (blurry:1.2)"
    assert info["extras"]["Version"] == "v1.10.1"
    code, out, _ = run_cli(capsys, "info", str(png))
    assert "Seed: 4240233169" in out and "Sampler: DPM++ 2M" in out


def test_info_on_a_bad_file_reports_it(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("hello")
    code, out, _ = run_cli(capsys, "info", str(bad), "--json")
    assert code == 1
    [info] = json.loads(out)
    assert info["file"] == str(bad) and info["error"]


def test_prompt_reports_attention_and_tokens(capsys) -> None:
    code, out, _ = run_cli(capsys, "prompt", "a (red:1.3) hat", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["attention"] == [["a ", 1.0], ["red", 1.3], [" hat", 1.0]]
    assert report["token_count"] == 3
    assert report["counter"] == "3/75"


def test_module_and_console_entry_points(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "charstudio", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("charstudio ")
    script = Path(sys.executable).parent / "charstudio"
    if script.exists():
        result = subprocess.run([str(script), "prompt", "hello", "--json"], capture_output=True)
        assert result.returncode == 0
        assert json.loads(result.stdout)["token_count"] == 1
