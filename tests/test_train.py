"""train.py end to end, as a user runs it: resume, checkpoints, errors, recipes, wandb."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import checkpoint
import prepare_sudoku
from conftest import REFERENCE, ROOT

# a tiny model that still exercises every part of the step: puzzle embedding (sign-SGD),
# exploration (random draws), EMA, ACT halting over several steps
TINY = ["--hidden_size=32", "--num_heads=2", "--expansion=2.0", "--L_layers=1", "--H_cycles=2",
        "--L_cycles=2", "--puzzle_emb_ndim=32", "--puzzle_emb_len=1", "--pos_encodings=rope",
        "--mlp_t=False", "--halt_max_steps=3", "--halt_exploration_prob=0.5",
        "--global_batch_size=16", "--epochs=10", "--eval_interval=1", "--lr_warmup_steps=3",
        "--log_interval=5", "--compile=False"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data") / "sudoku4"
    prepare_sudoku.build(str(d), source="generate", size=4, num_train=64, num_test=20, min_blanks=8, seed=1)
    return str(d)


def run(args, cwd=ROOT, env=None, check=True, timeout=300):
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    r = subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True,
                       env=e, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r


def assert_same(a, b, path="ckpt"):
    """Bitwise equality of nested checkpoint contents."""
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


VARIANTS = {
    "trm": [],
    "urm": ["--arch=urm", "--mlp_kind=conv_swiglu"],           # its conv parameters in bfloat16
    "urm_muon": ["--arch=urm", "--mlp_kind=conv_swiglu", "--optimizer=muon"],
    "hrm": ["--arch=hrm", "--H_layers=1", "--no_ACT_continue=False", "--ema=False"],
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_resume_is_bit_identical(tiny_data, tmp_path, variant):
    """N steps straight == k steps, stop, resume, N-k steps: weights, EMA, puzzle table,
    optimiser states, carry and data position all bitwise equal (CPU, fixed seed), for TRM, URM
    (also with Muon) and HRM. k falls inside a pass and the rest crosses pass boundaries
    (evaluations in between)."""
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    args = [*TINY, *VARIANTS[variant], f"--data_dir={tiny_data}"]
    run([*args, f"--out_dir={straight}", "--max_steps=11"])
    run([*args, f"--out_dir={split}", "--max_steps=6"])
    r = run([*args, f"--out_dir={split}", "--max_steps=11", "--init_from=resume"])
    assert "resumed from" in r.stdout and "at step 6" in r.stdout
    a = torch.load(os.path.join(straight, "ckpt.pt"), weights_only=True)
    b = torch.load(os.path.join(split, "ckpt.pt"), weights_only=True)
    assert a["step"] == b["step"] == 11
    for key in ("model", "ema", "optimizers", "data", "carry", "rng", "passes_done", "metrics"):
        assert_same(a[key], b[key], key)
    assert a["model"]["puzzle_emb.weights"].abs().sum() > 0  # the table did train


def test_op_paths_are_recorded_and_kept_on_resume(tiny_data, tmp_path):
    """Each op's path is decided once for the run, printed, and written into the checkpoint; a
    resumed run imposes the recorded paths (set_op_paths) instead of the table's, and TRM_USE_EXT
    still overrides them. On the CPU the table takes the reference for all four ops."""
    out = str(tmp_path / "run")
    args = [*TINY, f"--data_dir={tiny_data}", f"--out_dir={out}"]
    r = run([*args, "--max_steps=3"], env={"TRM_USE_EXT": "auto"})
    assert "ops on cpu: stablemax torch, softmax torch, gather torch, sign_sgd torch (AUTO_PATHS;" in r.stdout
    ck = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)
    assert ck["op_paths"] == {"stablemax": "torch", "softmax": "torch", "gather": "torch", "sign_sgd": "torch",
                              "device_type": "cpu", "source": "AUTO_PATHS", "ext_check": "not needed"}
    r = run([*args, "--max_steps=5", "--init_from=resume"], env={"TRM_USE_EXT": "auto"})
    assert "(set_op_paths; extension check: not needed)" in r.stdout
    assert torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)["op_paths"]["source"] == "set_op_paths"
    r = run([*args, "--max_steps=6", "--init_from=resume"], env={"TRM_USE_EXT": "off"})
    assert "(TRM_USE_EXT=off; extension check: not needed)" in r.stdout


# train.py, run with checkpoint.py's serialiser wrapped (the test writes this file into tmp_path):
# argv = ROOT SENTINEL FIRST train.py-arguments... The first checkpoint is written whole and its
# bytes also kept in FIRST; the second is written half into the file checkpoint.save hands over,
# then SENTINEL names that file and the process sleeps until it is killed. checkpoint.save's own
# logic (which file it writes, when it renames) runs unchanged.
STALL_SECOND_CHECKPOINT = r"""
import io, json, os, runpy, sys, time
ROOT, SENTINEL, FIRST = sys.argv[1:4]
sys.argv = [os.path.join(ROOT, "train.py")] + sys.argv[4:]
sys.path.insert(0, ROOT)
import torch
import checkpoint

calls = 0


def stalling_save(obj, f, *args, **kwargs):
    global calls
    calls += 1
    buf = io.BytesIO()
    torch.save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    own = isinstance(f, (str, os.PathLike))
    handle = open(f, "wb") if own else f
    if calls == 1:
        with open(FIRST, "wb") as g:
            g.write(data)
        handle.write(data)
        if own:
            handle.close()
        return
    handle.write(data[:len(data) // 2])
    handle.flush()
    os.fsync(handle.fileno())
    with open(SENTINEL + ".part", "w") as g:
        json.dump({"file": os.path.abspath(handle.name), "written": len(data) // 2, "size": len(data)}, g)
    os.replace(SENTINEL + ".part", SENTINEL)
    time.sleep(600)


class TorchButSave:  # torch as checkpoint.py sees it, with torch.save wrapped
    save = staticmethod(stalling_save)

    def __getattr__(self, name):
        return getattr(torch, name)


checkpoint.torch = TorchButSave()
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_killed_while_checkpointing_leaves_a_loadable_checkpoint(tiny_data, tmp_path):
    """SIGKILL while the second checkpoint is being written (half of it in the file, for certain):
    ckpt.pt is still the first checkpoint, byte for byte, it loads, and the run resumes from it."""
    import json
    out = str(tmp_path / "run")
    args = [*TINY, f"--data_dir={tiny_data}", f"--out_dir={out}", "--ckpt_interval=1", "--epochs=100"]
    path = os.path.join(out, "ckpt.pt")
    wrapper, sentinel, first = tmp_path / "stall_second_checkpoint.py", tmp_path / "writing", tmp_path / "first.pt"
    wrapper.write_text(STALL_SECOND_CHECKPOINT)
    with open(tmp_path / "log", "w") as log:
        p = subprocess.Popen([sys.executable, str(wrapper), ROOT, str(sentinel), str(first), *args], cwd=ROOT,
                             stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        t0 = time.time()
        while not sentinel.exists():
            assert p.poll() is None, "train.py ended before its second checkpoint:\n" + (tmp_path / "log").read_text()
            assert time.time() - t0 < 300, "no second checkpoint within 300 s"
            time.sleep(0.05)
        writing = json.loads(sentinel.read_text())
        # the process is inside the write: the file holds half a checkpoint
        assert p.poll() is None
        assert os.path.getsize(writing["file"]) == writing["written"] < writing["size"]
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == -signal.SIGKILL
    with open(path, "rb") as f:
        assert f.read() == first.read_bytes(), "ckpt.pt is not the previous checkpoint"
    assert writing["file"] != os.path.abspath(path)
    ck = checkpoint.load(path)
    assert ck["step"] >= 1 and "model" in ck
    r = run([*args, "--init_from=resume", f"--max_steps={ck['step'] + 2}"])
    assert f"at step {ck['step']}" in r.stdout


def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.pt")
    checkpoint.save({"step": 1}, path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        checkpoint.save({"step": 2}, path)
    monkeypatch.undo()
    assert checkpoint.load(path) == {"step": 1}
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "ckpt.pt"
    checkpoint.save({"step": 1, "w": torch.zeros(1000)}, str(path))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SystemExit, match="ckpt.pt is not a readable checkpoint"):
        checkpoint.load(str(path))
    with pytest.raises(SystemExit, match="checkpoint not found"):
        checkpoint.load(str(tmp_path / "missing.pt"))


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tiny_data, tmp_path):
    out = str(tmp_path / "run")
    r = run([*TINY, f"--data_dir={tiny_data}", f"--out_dir={out}", "--ckpt_interval=1", "--lr=1e30",
             "--lr_warmup_steps=0"], check=False)
    assert r.returncode != 0
    assert "non-finite loss" in r.stderr and "is intact" in r.stderr, r.stderr
    failed_at = int(re.search(r"non-finite loss \S+ at step (\d+)", r.stderr).group(1))
    assert checkpoint.load(os.path.join(out, "ckpt.pt"))["step"] == failed_at - 1


def test_errors_name_the_key_or_path(tiny_data, tmp_path):
    r = run(["--hiden_size=3"], check=False)
    assert r.returncode == 2 and "unknown setting 'hiden_size'" in r.stderr
    r = run(["--epochs=ten"], check=False)
    assert r.returncode == 2 and "'epochs'" in r.stderr
    missing = str(tmp_path / "nowhere")
    r = run([f"--data_dir={missing}", f"--out_dir={tmp_path / 'o'}"], check=False)
    assert r.returncode != 0 and "nowhere" in r.stderr.strip().splitlines()[-1]
    r = run([*TINY, f"--data_dir={tiny_data}", "--global_batch_size=15", "--epochs=3"],
            env={"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533"},
            check=False, timeout=60)
    assert r.returncode == 1  # at start-up, before waiting for the other rank
    assert r.stderr.strip().splitlines()[-1] == "error: global_batch_size 15 is not divisible by the world size 2"


def test_a_recipe_without_its_dataset_says_how_to_build_it(tmp_path):
    r = run(["config/maze.py", f"--out_dir={tmp_path / 'o'}"], check=False)  # no data/maze-* in a clone
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "error: dataset directory data/maze-30x30-hard-1k not found; build it with: "
        "python prepare_maze.py --aug=True --output_dir=data/maze-30x30-hard-1k"]


def test_sudoku_recipe_from_local_csv_runs_evaluates_and_resumes(tmp_path):
    """config/sudoku.py (the paper's recipe) with small overrides, on a dataset that
    prepare_sudoku.py built from local CSV files, with wandb logging offline."""
    data = str(tmp_path / "sudoku")
    r = subprocess.run([sys.executable, "prepare_sudoku.py", "--source=csv",
                        f"--input_dir={REFERENCE}/sudoku_ref_data/csv", "--num_aug=2", f"--output_dir={data}"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = str(tmp_path / "out")
    small = ["config/sudoku.py", f"--data_dir={data}", f"--out_dir={out}", "--hidden_size=64",
             "--num_heads=2", "--H_cycles=2", "--L_cycles=2", "--halt_max_steps=2",
             "--global_batch_size=16", "--compile=False", "--log_interval=1"]
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    r = run([*small, "--max_steps=2", "--wandb_log=True"], env=env)
    assert "eval step 2 [all]" in r.stdout and "exact_accuracy" in r.stdout
    assert os.path.isdir(os.path.join(tmp_path, "wandb"))
    ck = checkpoint.load(os.path.join(out, "ckpt.pt"))
    assert ck["step"] == 2 and ck["config"]["weight_decay"] == 1.0 and ck["model_config"]["mlp_t"]
    r = run([*small, "--max_steps=3", "--init_from=resume"])
    assert "resumed from" in r.stdout and "step 3/3" in r.stdout


@pytest.mark.parametrize("recipe, extra", [
    ("config/urm_arc1.py", ["--L_layers=1"]),
    ("config/hrm_arc1.py", ["--H_layers=1", "--L_layers=1"]),
])
def test_variant_arc_recipes_run_evaluate_and_resume(tmp_path, recipe, extra):
    """The URM and HRM ARC recipes, shrunk for a CPU, train on a prepare_arc.py dataset, evaluate
    (pass@K from the votes) and resume."""
    import prepare_arc
    data = prepare_arc.build(str(tmp_path / "arc"), subsets=["training"], test_set_name="training", num_aug=2,
                             task_ids=prepare_arc.MINI["task_ids"][:3], progress=False)
    args = [recipe, f"--data_dir={data}", f"--out_dir={tmp_path}/out", "--hidden_size=32", "--num_heads=2",
            "--puzzle_emb_ndim=32", "--H_cycles=2", "--L_cycles=1", "--halt_max_steps=2", "--global_batch_size=8",
            "--epochs=4", "--eval_interval=2", "--lr_warmup_steps=2", "--compile=False", *extra]
    r = run([*args, "--max_steps=2"], env={"TRM_USE_EXT": "off"})
    assert "[ARC] pass@1" in r.stdout
    r = run([*args, "--max_steps=4", "--init_from=resume"], env={"TRM_USE_EXT": "off"})
    assert "resumed from" in r.stdout and "at step 2" in r.stdout
    ck = torch.load(os.path.join(tmp_path, "out", "ckpt.pt"), weights_only=True)
    assert ck["step"] == 4 and ck["model_config"]["arch"] == recipe.split("/")[1][:3]
