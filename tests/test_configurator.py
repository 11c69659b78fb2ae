"""configurator.py: config files and --key=value overrides, their errors and --help; the
command lines of the scripts that use it."""
import importlib
import subprocess
import sys

import pytest

from configurator import ConfigError, configure, parse
from conftest import ROOT

DEFAULTS = {"lr": 1e-4, "epochs": 10, "ema": True, "out_dir": "out", "compile": None, "data_dir": "d",
            "subsets": [], "pass_ks": [1, 2], "pair": ("a", "b")}


def test_overrides_parse_as_literals():
    got = parse(DEFAULTS, ["--lr=3e-4", "--epochs=7", "--ema=False", "--out_dir=runs/x", "--compile=True"])
    assert got == {"lr": 3e-4, "epochs": 7, "ema": False, "out_dir": "runs/x", "compile": True}
    assert parse(DEFAULTS, ["--lr=1"]) == {"lr": 1.0}  # an int where a float is expected is fine
    assert parse(DEFAULTS, ["--out_dir=123"]) == {"out_dir": "123"}  # a str setting keeps the text


def test_lists_take_comma_separated_items():
    assert parse(DEFAULTS, ["--subsets=training,evaluation,concept"]) == {
        "subsets": ["training", "evaluation", "concept"]}
    assert parse(DEFAULTS, ["--subsets=training"]) == {"subsets": ["training"]}
    assert parse(DEFAULTS, ["--subsets="]) == {"subsets": []}
    # an empty default reads items as text, even ones that look like numbers (ARC task ids)
    assert parse(DEFAULTS, ["--subsets=007bbfb7,10000000"]) == {"subsets": ["007bbfb7", "10000000"]}
    # otherwise each item is read like the default's first one; a literal still works
    assert parse(DEFAULTS, ["--pass_ks=1,5, 10"]) == {"pass_ks": [1, 5, 10]}
    assert parse(DEFAULTS, ["--pass_ks=[3]", "--pair=c,d"]) == {"pass_ks": [3], "pair": ("c", "d")}
    assert parse(DEFAULTS, ["--compile=a,b"]) == {"compile": "a,b"}  # a None default takes the text


def test_config_file_then_override(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("import math\nlr = 2e-4\nepochs = 3\n_private = 1\n")
    assert parse(DEFAULTS, [str(f), "--epochs=5"]) == {"lr": 2e-4, "epochs": 5}


@pytest.mark.parametrize("argv, words", [
    (["--lrr=1e-3"], ["unknown setting", "'lrr'"]),
    (["--epochs=1.5"], ["'epochs'", "expects int", "float"]),
    (["--ema=yes"], ["'ema'", "expects bool", "str"]),
    (["--epochs"], ["--key=value"]),
    (["--ema"], ["--key=value", "--ema=True"]),  # an argparse-style switch
    (["--pass_ks=(1, 2)"], ["'pass_ks'", "expects list", "tuple"]),
    (["nowhere.py"], ["config file not found", "nowhere.py"]),
])
def test_errors_name_the_key(argv, words):
    with pytest.raises(ConfigError) as e:
        parse(DEFAULTS, argv)
    for w in words:
        assert w in str(e.value)


def test_bad_key_in_config_file_names_file_and_key(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text("hidden = 3\n")
    with pytest.raises(ConfigError, match=r"bad\.py: unknown setting 'hidden'"):
        parse(DEFAULTS, [str(f)])


def test_config_file_that_fails_names_the_file(tmp_path):
    f = tmp_path / "broken.py"
    f.write_text("lr = 1e-4 +\n")
    with pytest.raises(ConfigError, match=r"broken\.py: SyntaxError"):
        parse(DEFAULTS, [str(f)])


def test_configure_updates_globals_and_exits_on_error(capsys):
    g = dict(DEFAULTS)
    configure(g, ["--epochs=2"])
    assert g["epochs"] == 2
    with pytest.raises(SystemExit) as e:
        configure(g, ["--nope=1"])
    assert e.value.code == 2
    assert "unknown setting 'nope'" in capsys.readouterr().err


def test_help_prints_doc_and_resolved_settings(tmp_path, capsys):
    f = tmp_path / "c.py"
    f.write_text("epochs = 3\n")
    g = dict(DEFAULTS)
    with pytest.raises(SystemExit) as e:
        configure(g, [str(f), "--help", "--lr=1"], doc="Train a model.\n")
    assert e.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Train a model."
    assert {"  epochs = 3", "  lr = 1.0", "  ema = True", "  subsets = []"} <= set(out)
    assert g == DEFAULTS  # nothing applied
    with pytest.raises(SystemExit) as e:
        configure(g, ["-h", "--nope=1"])
    assert e.value.code == 2


def test_train_help_without_edits_there():
    """train.py's plain configure(globals()) gets --help: __main__'s docstring and its settings."""
    r = subprocess.run([sys.executable, "train.py", "config/sudoku.py", "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and not r.stderr, r.stderr
    assert r.stdout.startswith("Train a Tiny Recursive Model") and "  global_batch_size = 768\n" in r.stdout


@pytest.mark.parametrize("name, words", [
    ("prepare_arc", ["--subsets=A,B", "  num_aug = 1000", "  subsets = []"]),
    ("prepare_maze", ["--aug=True", "  aug = False"]),
    ("prepare_sudoku", ["--min_blanks=N", "  size = 9"]),
])
def test_prepare_help(capsys, name, words):
    module = importlib.import_module(name)
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(module.__doc__.strip()[:40])
    for w in words:
        assert w in out


def test_prepare_scripts_reject_the_old_syntax_in_one_line(capsys):
    import prepare_maze
    with pytest.raises(SystemExit) as e:
        prepare_maze.main(["--aug"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["error: expected --key=value, got '--aug' (a switch is --aug=True)"]


SUDOKU = dict(source="hub", source_repo="sapientinc/sudoku-extreme", input_dir=None,
              output_dir="data/sudoku-extreme-full", size=9, num_train=1000, num_test=100, min_blanks=None,
              max_blanks=None, subsample_size=None, min_difficulty=None, num_aug=0, seed=0, val_fraction=0.0)
MAZE = dict(source="hub", source_repo="sapientinc/maze-30x30-hard-1k", input_dir=None,
            output_dir="data/maze-30x30-hard-1k", size=30, num_train=1000, num_test=1000, min_path_len=None,
            loop_prob=0.05, subsample_size=None, aug=False, seed=0, val_fraction=0.0)
ARC = dict(input_file_prefix=None, version=1, subsets=None, test_set_name=None, output_dir=None, num_aug=1000,
           seed=42, task_ids=None, num_workers=None, val_pairs=0, hold_out_test_tasks=False)


@pytest.mark.parametrize("name, argv, want", [
    # no options: the builder's None ("the default") wherever the command line has 0, '' or []
    ("prepare_sudoku", [], SUDOKU),
    ("prepare_maze", [], MAZE),
    ("prepare_arc", [], ARC),
    ("prepare_sudoku", ["--source=generate", "--size=6", "--min_blanks=18", "--input_dir=in"],
     {**SUDOKU, "source": "generate", "size": 6, "min_blanks": 18, "input_dir": "in"}),
    ("prepare_maze", ["--aug=True", "--loop_prob=0", "--subsample_size=10"],
     {**MAZE, "aug": True, "loop_prob": 0.0, "subsample_size": 10}),
    ("prepare_arc", ["--version=2", "--subsets=training2,evaluation2", "--task_ids=0d3d703e,25ff71a9", "--num_aug=0"],
     {**ARC, "version": 2, "subsets": ["training2", "evaluation2"], "task_ids": ["0d3d703e", "25ff71a9"],
      "num_aug": 0}),
])
def test_prepare_command_line_reaches_build(monkeypatch, capsys, name, argv, want):
    module = importlib.import_module(name)
    got = {}
    monkeypatch.setattr(module, "build", lambda **kw: got.update(kw) or "out")
    module.main(argv)
    assert got == want
    assert capsys.readouterr().out.endswith("wrote out\n")
