# torchrun on CPU with gloo: 2 ranks train and evaluate what 1 rank does (same global batch and
# seed), a 2-rank checkpoint resumes on 1 rank, and a rank that hangs or dies ends the job with an
# error instead of a hang.
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT
import prepare_arc
import prepare_sudoku

# a small model on 4x4 Sudoku; no exploration, so that halting depends on the weights only (the
# exploration draws are per rank)
TINY = ["--hidden_size=32", "--num_heads=2", "--L_layers=1", "--H_cycles=2", "--L_cycles=1", "--halt_max_steps=2",
        "--halt_exploration_prob=0.0", "--global_batch_size=16", "--epochs=4", "--eval_interval=2",
        "--puzzle_emb_ndim=16", "--puzzle_emb_len=2", "--compile=False", "--log_interval=1", "--ema_rate=0.9"]
CGAR = ["--depth_schedule=0:1x1,0.1:2x1", "--supervision_decay=0.7"]  # train.py's CGAR settings, both on
ENV = {**os.environ, "TRM_USE_EXT": "off", "OMP_NUM_THREADS": "1"}


def launch(nproc, script, *args):
    if nproc == 1:
        cmd = [sys.executable, script, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script, *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def run(nproc, script, *args, timeout=300):
    p = launch(nproc, script, *args)
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, out + err
    assert "terminate called" not in err, err  # a rank that aborted on its way out
    return out


@pytest.fixture(scope="module")
def sudoku(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    return prepare_sudoku.build(str(d / "data"), source="generate", size=4, num_train=100, num_test=40,
                                min_blanks=6, num_aug=1, seed=0)


def close(a: dict, b: dict, rtol=1e-5):
    for k in a:
        scale = b[k].abs().max().clamp_min(1e-12)
        assert ((a[k] - b[k]).abs().max() / scale) <= rtol, k


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def runs(sudoku, tmp_path_factory):
    """1 rank for 20 steps; 2 ranks for 20 steps; 2 ranks for 10 steps, resumed on 1 rank to 20."""
    d = tmp_path_factory.mktemp("runs")
    common = [f"--data_dir={sudoku}", *TINY]
    runs = {"one": (1, []), "two": (2, []),
            "accum": (1, ["--grad_accum_steps=4"]),           # 4 micro-batches of 4 on one process
            "two_accum": (2, ["--grad_accum_steps=2"]),       # 2 ranks x 2 micro-batches of 4
            "cgar": (1, CGAR), "cgar_two_accum": (2, ["--grad_accum_steps=2", *CGAR])}
    out = {}
    for pair in (("one", "two"), ("accum", "two_accum"), ("cgar", "cgar_two_accum")):  # two at a time: >= 2 cores
        procs = {n: launch(runs[n][0], "train.py", *common, f"--out_dir={d}/{n}", "--max_steps=20", *runs[n][1])
                 for n in pair}
        for name, p in procs.items():
            o, e = p.communicate(timeout=300)
            assert p.returncode == 0, o + e
            assert "terminate called" not in e, e
            assert "FutureWarning" not in e and "deprecated" not in e, e  # e.g. all_gather_into_tensor's
            out[name] = o
    run(2, "train.py", *common, f"--out_dir={d}/resumed", "--max_steps=10")
    half = load(f"{d}/resumed/ckpt.pt")
    out["resumed"] = run(1, "train.py", *common, f"--out_dir={d}/resumed", "--max_steps=20", "--init_from=resume")
    return {k: load(f"{d}/{k}/ckpt.pt") for k in (*runs, "resumed")}, out, half


def test_gradient_accumulation_equals_the_whole_batch(runs):
    """K micro-batches per step (each with its own slot of the ACT carry) train as one batch of all
    their rows: after 20 steps the weights agree within 1e-5, on one process and on two."""
    ck, out, _ = runs
    for name in ("accum", "two_accum"):
        assert ck[name]["step"] == 20
        close(ck[name]["model"], ck["one"]["model"])
        close(ck[name]["ema"], ck["one"]["ema"])
        assert ck[name]["carry"]["steps"].shape[0] == 16  # the global batch's carry, as without accumulation


def test_depth_curriculum_and_step_weighting_under_torchrun_and_accumulation(runs):
    """With a depth change early in the 20 steps and supervision weighting, 2 ranks x 2
    micro-batches train what 1 process trains (within 1e-5), and the settings did change the
    training."""
    ck, out, _ = runs
    total = int(out["cgar"].split(" steps in the schedule")[0].split()[-1])
    change = next(s for s in range(1, total + 1) if (s - 1) / total >= 0.1)  # the second stage's first step
    assert 1 < change < 20
    for name in ("cgar", "cgar_two_accum"):
        assert out[name].count(f"step {change}: training at depth H_cycles=2 L_cycles=1") == 1, out[name]
    close(ck["cgar_two_accum"]["model"], ck["cgar"]["model"])
    close(ck["cgar_two_accum"]["ema"], ck["cgar"]["ema"])
    diff = max(float((ck["cgar"]["model"][k] - ck["one"]["model"][k]).abs().max()) for k in ck["one"]["model"])
    assert diff > 1e-3


def test_two_ranks_equal_one(runs):
    ck, out, _ = runs
    assert "world size 2" in out["two"] and "world size 1" in out["one"]
    assert ck["one"]["step"] == ck["two"]["step"] == 20
    close(ck["two"]["model"], ck["one"]["model"])
    close(ck["two"]["ema"], ck["one"]["ema"])
    m1, m2 = ck["one"]["metrics"]["all"], ck["two"]["metrics"]["all"]
    for k in ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps"):
        assert m1[k] == pytest.approx(m2[k], abs=1e-6), k
    # the 2-rank checkpoint holds the carry of the whole global batch and both ranks' RNG states
    assert ck["two"]["carry"]["steps"].shape[0] == 16 and len(ck["two"]["rng"]["torch"]) == 2
    # only rank 0 printed
    assert out["two"].count("done: 20 steps") == 1


def test_two_rank_checkpoint_resumes_on_one(runs):
    ck, out, half = runs
    assert half["step"] == 10 and half["world_size"] == 2
    assert "resumed from" in out["resumed"] and "(saved by 2 ranks, now 1)" in out["resumed"]
    assert ck["resumed"]["step"] == 20
    close(ck["resumed"]["model"], ck["one"]["model"])


def test_evaluation_two_ranks_equal_one(tmp_path):
    data = prepare_arc.build(str(tmp_path / "arc"), subsets=["training"], test_set_name="training", num_aug=3,
                             task_ids=prepare_arc.MINI["task_ids"][:4], progress=False)
    run(1, "train.py", "config/arc_mini.py", f"--data_dir={data}", f"--out_dir={tmp_path}/out", "--max_steps=3",
        "--hidden_size=32", "--num_heads=2", "--puzzle_emb_ndim=32", "--halt_max_steps=2", "--global_batch_size=8")
    args = [f"--ckpt={tmp_path}/out/ckpt.pt", "--batch_size=6", "--curve_repeats=3", "--bootstrap=100", "--html=False",
            "--puzzle_ids=all"]
    run(1, "evaluate.py", *args, f"--out_dir={tmp_path}/e1")
    two = run(2, "evaluate.py", *args, f"--out_dir={tmp_path}/e2")
    assert "2 ranks" in two
    reports = []
    for e in ("e1", "e2"):
        with open(tmp_path / e / "report.json") as f:
            reports.append(json.load(f))
        with open(tmp_path / e / "submission.json") as f:
            reports[-1]["submission"] = json.load(f)
    r1, r2 = reports
    assert r1["submission"] == r2["submission"]
    assert {k: v for k, v in r1["arc"].items()} == {k: v for k, v in r2["arc"].items()}
    # the test split is covered exactly once across the ranks
    n = sum(len(t["test"]) * 4 for t in json.load(open(os.path.join(data, "test_puzzles.json"))).values())
    assert r1["metrics"]["all"]["count"] == r2["metrics"]["all"]["count"] == n
    assert r1["metrics"]["all"]["exact_accuracy"] == pytest.approx(r2["metrics"]["all"]["exact_accuracy"])
    # the puzzle-identity ablation (--puzzle_ids=all) gives the same figures on 2 ranks
    assert list(r1["puzzle_ids"]) == list(r2["puzzle_ids"]) == ["own", "blank", "mean", "random"]
    for mode, row in r1["puzzle_ids"].items():
        assert row.keys() == r2["puzzle_ids"][mode].keys()
        for k, v in row.items():
            assert v == pytest.approx(r2["puzzle_ids"][mode][k], abs=1e-6), (mode, k)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="lists the threads through /proc")
def test_close_leaves_no_backend_thread():
    """rt.close() at the end of a finished two-rank job (an optimiser built after setup, as in
    train.py, then the checkpoint's two gathers) tears the process group down for good: no gloo
    thread is left to outlive the interpreter. One that is, and still holds its last collective's
    tensors when Python finalizes, aborts the rank ('terminate called without an active
    exception', SIGABRT) after the job's work is done; tests/stress_distributed.py runs whole
    jobs many times for that."""
    from stress_distributed import threads_after_close
    left, failed = threads_after_close(ROOT)
    assert not failed, failed
    assert not left, left


def worker_pids(launcher: int) -> dict[int, int]:
    """rank -> pid of the processes torchrun started."""
    pids = {}
    for task in os.listdir(f"/proc/{launcher}/task"):
        with open(f"/proc/{launcher}/task/{task}/children") as f:
            for pid in map(int, f.read().split()):
                with open(f"/proc/{pid}/environ", "rb") as e:
                    env = dict(kv.split(b"=", 1) for kv in e.read().split(b"\0") if b"=" in kv)
                if b"RANK" in env:
                    pids[int(env[b"RANK"])] = pid
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the ranks through /proc")
@pytest.mark.parametrize("fault", ["hang", "die"])
def test_a_failed_rank_ends_the_job(sudoku, tmp_path, fault):
    """Rank 1 is stopped (a hang) or killed (a crash) mid-run: the job exits non-zero within a
    bounded time, rank 0 saying why."""
    p = launch(2, "train.py", f"--data_dir={sudoku}", *TINY, "--epochs=1000", "--eval_interval=1000",
               f"--out_dir={tmp_path}/out", "--ddp_timeout=5")
    try:
        # wait until training runs
        deadline = time.time() + 120
        line = ""
        while "step 3/" not in line:
            line = p.stdout.readline()
            assert line or p.poll() is None, p.stderr.read()
            assert time.time() < deadline, "training did not start"
        pids = worker_pids(p.pid)
        assert set(pids) == {0, 1}
        t0 = time.time()
        os.kill(pids[1], signal.SIGSTOP if fault == "hang" else signal.SIGKILL)
        _, err = p.communicate(timeout=120)
        assert p.returncode != 0
        assert time.time() - t0 < 100
        if fault == "hang":
            assert "error: rank 0: a collective failed" in err and "ddp_timeout=5s" in err
    finally:
        for pid in (worker_pids(p.pid).values() if p.poll() is None else []):
            os.kill(pid, signal.SIGKILL)
        if p.poll() is None:
            p.kill()
        p.wait()


def test_indivisible_global_batch_is_an_error(sudoku, tmp_path):
    p = launch(2, "train.py", f"--data_dir={sudoku}", *TINY, "--global_batch_size=15", f"--out_dir={tmp_path}/out")
    out, err = p.communicate(timeout=120)
    assert p.returncode != 0
    assert "error: global_batch_size 15 is not divisible by the world size 2" in out + err


def test_gradient_accumulation_resumes_bit_for_bit(sudoku, tmp_path):
    common = [f"--data_dir={sudoku}", *TINY, "--grad_accum_steps=2"]
    run(1, "train.py", *common, f"--out_dir={tmp_path}/straight", "--max_steps=12")
    run(1, "train.py", *common, f"--out_dir={tmp_path}/resumed", "--max_steps=6")
    run(1, "train.py", *common, f"--out_dir={tmp_path}/resumed", "--max_steps=12", "--init_from=resume")
    a, b = load(f"{tmp_path}/straight/ckpt.pt"), load(f"{tmp_path}/resumed/ckpt.pt")
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for k in ("z_H", "z_L", "steps", "halted"):
        assert torch.equal(a["carry"][k], b["carry"][k]), k
