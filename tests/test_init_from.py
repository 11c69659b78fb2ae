"""From a checkpoint to new puzzles: train.py --init_from (ours, a reference state dict with its
all_config.yaml, a hf: path served from a local hub cache), puzzle rows that follow their names,
freeze_weights, the checkpoint history and best.pt, and the new-ARC-task recipe end to end."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

import checkpoint
import prepare_arc
from conftest import ROOT, arc1_tasks, write_kaggle
from checkpoint import weights_for

ENV = {**os.environ, "TRM_USE_EXT": "off", "PYTHONUNBUFFERED": "1"}
# a tiny ARC model: attention, rope, a puzzle embedding of 2 positions
TINY = ["--hidden_size=16", "--num_heads=2", "--expansion=2.0", "--L_layers=1", "--H_cycles=2", "--L_cycles=1",
        "--puzzle_emb_ndim=16", "--puzzle_emb_len=2", "--pos_encodings=rope", "--mlp_t=False",
        "--halt_max_steps=2", "--halt_exploration_prob=0.0", "--global_batch_size=8", "--eval_interval=1",
        "--lr_warmup_steps=2", "--log_interval=2", "--compile=False"]


def run(script, *args, check=True):
    r = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=ENV)
    if check:
        assert r.returncode == 0, f"{script} {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r


def arc_data(dest, task_ids, num_aug=0, test_set=True):
    """An ARC dataset of these ARC-AGI-1 training tasks: their demonstrations train, their test
    pairs (with answers) form the test split."""
    tasks = arc1_tasks()["training"]
    os.makedirs(f"{dest}-json")
    prefix = write_kaggle(f"{dest}-json", {"training": [tasks[i] for i in task_ids]})
    return prepare_arc.build(str(dest), input_file_prefix=prefix, subsets=["training"], test_set_name="training",
                             num_aug=num_aug, seed=1, progress=False)


TASKS_A = ["0d3d703e", "25ff71a9", "3c9b0459"]
TASKS_B = ["3c9b0459", "6150a2bd", "0d3d703e"]  # shares two tasks with A, at other identifiers


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A run trained a few steps on TASKS_A (no augmentation: a puzzle's name is its task id)."""
    d = tmp_path_factory.mktemp("init")
    data = arc_data(d / "a", TASKS_A)
    out = str(d / "run")
    run("train.py", *TINY, f"--data_dir={data}", f"--out_dir={out}", "--epochs=4", "--puzzle_emb_lr=0.1")
    return d, data, out


def table(path):
    return torch.load(path, weights_only=True)["model"]["puzzle_emb.weights"]


def test_puzzle_rows_follow_their_names_and_new_ones_get_the_mean(base):
    d, data_a, out = base
    data_b = arc_data(d / "b", TASKS_B)
    names_a = json.load(open(os.path.join(data_a, "identifiers.json")))
    names_b = json.load(open(os.path.join(data_b, "identifiers.json")))
    assert sorted(names_a[1:]) == sorted(TASKS_A) and sorted(names_b[1:]) == sorted(TASKS_B)
    assert any(names_a.index(t) != names_b.index(t) for t in set(TASKS_A) & set(TASKS_B))  # rows must move
    new = str(d / "from-a")
    # no learning at all: the checkpoint written after one step holds the starting table
    run("train.py", *TINY, f"--data_dir={data_b}", f"--out_dir={new}", f"--init_from={out}/ckpt.pt",
        "--max_steps=1", "--lr=0.0", "--puzzle_emb_lr=0.0", "--epochs=1")
    old, got = table(f"{out}/ckpt.pt"), table(f"{new}/ckpt.pt")
    assert not torch.equal(old[1], old[3])  # the trained rows differ, so a wrong mapping shows
    for i, name in enumerate(names_b):
        if name in names_a:
            assert torch.equal(got[i], old[names_a.index(name)]), name
        else:
            torch.testing.assert_close(got[i], old.mean(0), rtol=0, atol=1e-7)
    ck = torch.load(f"{new}/ckpt.pt", weights_only=True)
    assert ck["identifiers"] == names_b
    # the architecture came from the checkpoint: the weights equal its EMA weights
    src = torch.load(f"{out}/ckpt.pt", weights_only=True)
    for k, v in src["ema"].items():
        assert torch.equal(ck["model"][k], v), k


def test_freeze_weights_trains_only_the_table(base):
    d, data_a, out = base
    new = str(d / "frozen")
    r = run("train.py", *TINY, f"--data_dir={data_a}", f"--out_dir={new}", f"--init_from={out}/ckpt.pt",
            "--freeze_weights=True", "--epochs=3", "--puzzle_emb_lr=0.1", "--lr=0.01")
    assert "only the puzzle table trains" in r.stdout
    src, got = torch.load(f"{out}/ckpt.pt", weights_only=True), torch.load(f"{new}/ckpt.pt", weights_only=True)
    start = weights_for("ours", src, f"{out}/ckpt.pt", src["identifiers"])[0]
    for k, v in got["model"].items():
        if k == "puzzle_emb.weights":
            assert not torch.equal(v, start[k])
        else:
            assert torch.equal(v, start[k]), k
    # unfreeze_at: from that fraction of the schedule on, every weight trains
    new2 = str(d / "unfrozen")
    r = run("train.py", *TINY, f"--data_dir={data_a}", f"--out_dir={new2}", f"--init_from={out}/ckpt.pt",
            "--freeze_weights=True", "--unfreeze_at=0.5", "--epochs=4", "--lr=0.01")
    assert "every weight trains from here on" in r.stdout
    got2 = torch.load(f"{new2}/ckpt.pt", weights_only=True)
    assert not torch.equal(got2["model"]["lm_head.weight"], start["lm_head.weight"])


def test_a_setting_that_contradicts_the_checkpoint_is_an_error(base):
    d, data_a, out = base
    r = run("train.py", *TINY, "--hidden_size=32", f"--data_dir={data_a}", f"--out_dir={d}/clash",
            f"--init_from={out}/ckpt.pt", check=False)
    assert r.returncode == 1
    assert "has another architecture than these settings" in r.stderr and "'hidden_size': (32, 16)" in r.stderr


def test_history_keeps_k_and_best_follows_the_metric(base, tmp_path):
    d, data_a, out = base
    data = str(tmp_path / "with-val")
    shutil.copytree(data_a, data)
    shutil.copytree(os.path.join(data, "test"), os.path.join(data, "val"))  # a val split of the same format
    shutil.copy(os.path.join(data, "test_puzzles.json"), os.path.join(data, "val_puzzles.json"))
    run_dir = str(tmp_path / "run")
    r = run("train.py", *TINY, f"--data_dir={data}", f"--out_dir={run_dir}", "--epochs=5", "--keep_checkpoints=2",
            "--best_metric=val/accuracy")
    steps = sorted(int(f[5:-3]) for f in os.listdir(run_dir) if f.startswith("step_"))
    assert len(steps) == 2 and steps[-1] == torch.load(f"{run_dir}/ckpt.pt", weights_only=True)["step"]
    evals = [line for line in r.stdout.splitlines() if line.startswith("eval step") and "[val/all]" in line]
    assert len(evals) == 5
    values = [(int(line.split()[2]), float(line.split("accuracy ")[1].split()[0])) for line in evals]
    best_step, best_value = max(values, key=lambda v: (v[1], -v[0]))  # the first of the highest
    best = torch.load(f"{run_dir}/best.pt", weights_only=True)
    assert best["step"] == best_step and best["best"]["value"] == pytest.approx(best_value, abs=1e-4)
    r = run("train.py", *TINY, f"--data_dir={data_a}", f"--out_dir={tmp_path}/x", "--best_metric=val/pass@2",
            check=False)
    assert r.returncode == 1 and "this dataset has no val split" in r.stderr


# -----------------------------------------------------------------------------
# a reference checkpoint with its all_config.yaml, from a hub snapshot

def reference_snapshot(cache, ours, data_paths):
    """A hub cache (HF_HUB_CACHE layout) holding acme/trm-ref at one revision, with
    ref/step_7: our checkpoint's EMA weights as the reference saves them (compiled-model key
    prefix) and ref/all_config.yaml written as the reference's pretrain.py writes it."""
    snap = os.path.join(cache, "models--acme--trm-ref", "snapshots", "0123abcd")
    os.makedirs(os.path.join(snap, "ref"))
    os.makedirs(os.path.join(cache, "models--acme--trm-ref", "refs"))
    with open(os.path.join(cache, "models--acme--trm-ref", "refs", "main"), "w") as f:
        f.write("0123abcd")
    state = {**ours["model"], **ours["ema"]}
    torch.save({f"_orig_mod.model.inner.{k}": v for k, v in state.items()}, os.path.join(snap, "ref", "step_7"))
    m = ours["model_config"]
    arch = {"name": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
            "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
            **{k: m[k] for k in ("H_cycles", "L_cycles", "H_layers", "L_layers", "hidden_size", "num_heads",
                                 "expansion", "puzzle_emb_ndim", "puzzle_emb_len", "pos_encodings", "mlp_t",
                                 "halt_max_steps", "halt_exploration_prob", "no_ACT_continue")},
            "forward_dtype": "bfloat16"}
    with open(os.path.join(snap, "ref", "all_config.yaml"), "w") as f:
        yaml.dump({"arch": arch, "data_paths": data_paths, "global_batch_size": 768, "lr": 1e-4, "ema": True}, f)
    return snap


def test_hub_path_and_all_config_yaml(base, tmp_path, monkeypatch):
    d, data_a, out = base
    ours = torch.load(f"{out}/ckpt.pt", weights_only=True)
    cache = str(tmp_path / "hub")
    reference_snapshot(cache, ours, [os.path.abspath(data_a)])
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # served from the cache: no network here
    local = checkpoint.resolve("hf:acme/trm-ref/ref/step_7")
    assert local.endswith(os.path.join("0123abcd", "ref", "step_7"))
    ref = checkpoint.reference_config(local)
    assert ref["model"]["arch"] == "trm" and ref["model"]["loss_type"] == "stablemax"
    assert ref["model"]["hidden_size"] == 16 and ref["data_paths"] == [os.path.abspath(data_a)]
    # evaluate.py: no --config and no architecture settings, the yaml gives them; the same batch size
    # as ours (the losses count padding rows, as the reference's do)
    env = {**ENV, "HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    ev = str(tmp_path / "ev")
    r = subprocess.run([sys.executable, "evaluate.py", "--ckpt=hf:acme/trm-ref/ref/step_7", f"--data={data_a}",
                        f"--out_dir={ev}", "--batch_size=8"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode == 0, r.stderr
    mine = subprocess.run([sys.executable, "evaluate.py", f"--ckpt={out}/ckpt.pt", f"--out_dir={tmp_path}/ev2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    rep, rep2 = (json.load(open(os.path.join(p, "report.json"))) for p in (ev, f"{tmp_path}/ev2"))
    assert rep["provenance"]["checkpoint_kind"] == "reference"
    assert rep["metrics"] == rep2["metrics"] and rep["arc"]["pass@2"] == rep2["arc"]["pass@2"]
    # train.py --init_from=hf:...: the architecture from the yaml, rows by the names of its data_paths
    data_b = arc_data(d / "b2", TASKS_B)
    r = subprocess.run([sys.executable, "train.py", *TINY[1:], f"--data_dir={data_b}", f"--out_dir={tmp_path}/t",
                        "--init_from=hf:acme/trm-ref/ref/step_7", "--max_steps=1", "--lr=0.0", "--puzzle_emb_lr=0.0",
                        "--epochs=1"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    assert "3 of 4 rows by name" in r.stdout
    got = table(f"{tmp_path}/t/ckpt.pt")
    names_a = json.load(open(os.path.join(data_a, "identifiers.json")))
    names_b = json.load(open(os.path.join(data_b, "identifiers.json")))
    assert torch.equal(got[names_b.index("0d3d703e")], ours["model"]["puzzle_emb.weights"][names_a.index("0d3d703e")])
    # a missing file on the hub is one line
    r = subprocess.run([sys.executable, "evaluate.py", "--ckpt=hf:acme/trm-ref/ref/step_8", f"--data={data_a}",
                        f"--out_dir={tmp_path}/ev3"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 1 and r.stderr.strip().startswith("error: hf:acme/trm-ref/ref/step_8: could not download")


# -----------------------------------------------------------------------------
# the new-ARC-task recipe

def test_new_arc_tasks_recipe_end_to_end(base, tmp_path):
    """Two tasks the checkpoint never saw, given as a Kaggle challenges file without solutions:
    prepare_arc.py builds them, config/arc_ttt.py trains their puzzle rows (then every weight) on
    their demonstrations only, evaluate.py writes submission.json for their test inputs."""
    d, data_a, out = base
    tasks = arc1_tasks()["training"]
    new = [tasks["6150a2bd"], tasks["67a3c6ac"]]
    prefix = write_kaggle(str(tmp_path), {"new": new})
    os.remove(f"{prefix}_new_solutions.json")  # the answers are unknown
    data = str(tmp_path / "new-data")
    run("prepare_arc.py", f"--input_file_prefix={prefix}", "--subsets=new", "--test_set_name=new", "--num_aug=3",
        f"--output_dir={data}")
    run_dir = str(tmp_path / "ttt")
    r = run("train.py", "config/arc_ttt.py", f"--init_from={out}/ckpt.pt", f"--data_dir={data}",
            f"--out_dir={run_dir}", "--epochs=4", "--eval_interval=2", "--global_batch_size=8", "--compile=False")
    assert "only the puzzle table trains" in r.stdout and "every weight trains from here on" in r.stdout
    ev = str(tmp_path / "ev")
    run("evaluate.py", f"--ckpt={run_dir}/ckpt.pt", f"--out_dir={ev}")
    sub = json.load(open(os.path.join(ev, "submission.json")))
    assert sorted(sub) == sorted(t.id for t in new)
    for t in new:
        assert len(sub[t.id]) == len(t.test) and set(sub[t.id][0]) == {"attempt_1", "attempt_2"}
