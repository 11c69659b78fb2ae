# Smoke test of bench.py: a tiny run on the reference backend exits cleanly and prints its table.
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_runs_and_prints_the_table():
    # the reference backend only, so that the test never waits on a build of the extension
    args = ["--iters=1", "--warmup=0", "--configs=sudoku", "--ops_batch=8", "--batch_size=2",
            "--hidden_size=32", "--backends=torch", "--device=cpu"]
    r = subprocess.run([sys.executable, "bench.py", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "bench: device=cpu" in r.stdout
    lines = r.stdout.splitlines()
    assert any(line.split()[:2] == ["what", "backend"] for line in lines), r.stdout
    for what in ("stablemax_ce", "softmax_ce", "gather_rows", "sparse_sign_sgd_", "train_step sudoku"):
        assert any(line.startswith(what) for line in lines), (what, r.stdout)


def test_bench_prints_the_machine_speed():
    """The timing configuration, whose step time the README's quick-start figure quotes."""
    r = subprocess.run([sys.executable, "bench.py", "--iters=1", "--warmup=0", "--time_ops=False", "--configs=timing",
                        "--backends=torch", "--device=cpu"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert any(line.startswith("train_step timing (0.53M)") and "B=16 h=128 S=16+81" in line
               for line in r.stdout.splitlines()), r.stdout
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith("machine speed: one training step at the reference's timing configuration"), line
    assert float(line.split("takes ")[1].split(" s")[0]) > 0
