"""configurator.py: config files and --key=value overrides, and their errors."""
import os
import subprocess
import sys

import pytest

from configurator import ConfigError, configure, parse
from conftest import ROOT

DEFAULTS = {"lr": 1e-4, "epochs": 10, "ema": True, "out_dir": "out", "compile": None, "data_dir": "d"}


def test_overrides_parse_as_literals():
    got = parse(DEFAULTS, ["--lr=3e-4", "--epochs=7", "--ema=False", "--out_dir=runs/x", "--compile=True"])
    assert got == {"lr": 3e-4, "epochs": 7, "ema": False, "out_dir": "runs/x", "compile": True}
    assert parse(DEFAULTS, ["--lr=1"]) == {"lr": 1.0}  # an int where a float is expected is fine
    assert parse(DEFAULTS, ["--out_dir=123"]) == {"out_dir": "123"}  # a str setting keeps the text


def test_config_file_then_override(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("import math\nlr = 2e-4\nepochs = 3\n_private = 1\n")
    assert parse(DEFAULTS, [str(f), "--epochs=5"]) == {"lr": 2e-4, "epochs": 5}


@pytest.mark.parametrize("argv, words", [
    (["--lrr=1e-3"], ["unknown setting", "'lrr'"]),
    (["--epochs=1.5"], ["'epochs'", "expects int", "float"]),
    (["--ema=yes"], ["'ema'", "expects bool", "str"]),
    (["--epochs"], ["--key=value"]),
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


def test_configure_updates_globals_and_exits_on_error(capsys):
    g = dict(DEFAULTS)
    configure(g, ["--epochs=2"])
    assert g["epochs"] == 2
    with pytest.raises(SystemExit) as e:
        configure(g, ["--nope=1"])
    assert e.value.code == 2
    assert "unknown setting 'nope'" in capsys.readouterr().err


def test_shipped_configs_load():
    """Every config/*.py sets only settings train.py has, with the right types: run train.py's
    own parser on each through a tiny wrapper that stops before any work."""
    code = ("import runpy, sys, configurator\n"
            "src = open('train.py').read().split('from configurator import configure')[0]\n"
            "g = {}\nexec(src, g)\n"
            "for cfg in sys.argv[1:]:\n"
            "    configurator.parse({k: v for k, v in g.items() if not k.startswith('_')}, [cfg])\n")
    cfgs = sorted(os.path.join("config", f) for f in os.listdir(os.path.join(ROOT, "config")) if f.endswith(".py"))
    r = subprocess.run([sys.executable, "-c", code, *cfgs], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
