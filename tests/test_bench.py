# Smoke test of bench.py: a tiny run on the reference backend exits cleanly and prints its table.
import ast
import os
import re
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


# --device_check=True: the one command for a GPU machine, run here on a CPU in quick mode --------

def table_rows(text):
    """{first cell: [cells]} of the markdown table in text, and its header line."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        rows[cells[0]] = cells
    return lines[0], rows


def run_device_check(tmp_path, *args, timeout=300):
    out = tmp_path / "device_check.md"
    env = {**os.environ, "TRM_NO_EXT": "1", "CUDA_VISIBLE_DEVICES": ""}  # no build of the extension, no GPU
    r = subprocess.run([sys.executable, "bench.py", "--device_check=True", "--quick=True",
                        f"--device_check_out={out}", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=timeout)
    return r, out


def test_device_check_runs_on_a_cpu_in_quick_mode(tmp_path):
    r, out = run_device_check(tmp_path)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    text = out.read_text()
    assert text.strip() in r.stdout  # the same table printed and written
    assert (tmp_path / "device_check.log").exists()
    header, rows = table_rows(text)
    assert header == "| check | status | result | s |"
    assert rows["device"][2].startswith("cpu")
    import torch
    assert rows["torch"][2].startswith(torch.__version__)
    assert rows["CUDA"][2].startswith(("none", "no GPU"))
    assert re.match(r"([0-9a-f]{7,}, (clean|dirty \(\d+ tracked files changed\))|unknown)", rows["commit"][2]), rows
    assert rows["settings"][2].startswith("float32, quick=True")
    # each part's status: what needs CUDA or the extension says why it did not run
    assert rows["1. extension build + check_ext"][1] == "skipped: TRM_NO_EXT is set"
    assert rows["2. CUDA tests (pytest)"][1] == "skipped: no CUDA"
    bench = rows["3a. op and step benchmarks, eager"]
    assert bench[1] == "pass" and "reference only, no extension: TRM_NO_EXT is set" in bench[2], bench
    assert rows["3b. op and step benchmarks, torch.compile"][1].startswith("skipped:")
    for what in ("stablemax_ce fwd+bwd arc", "softmax_ce fwd+bwd sudoku", "gather_rows", "sparse_sign_sgd_",
                 "train_step sudoku"):
        got = [cells for key, cells in rows.items() if key.startswith(what)]
        assert got and re.match(r"eager: torch [\d.]+ ms$", got[0][2]), (what, got)
    train = rows["4. train mini Sudoku (train.py)"]
    assert train[1] == "pass" and re.search(r"2 steps; [\d.]+ steps/s", train[2]), train
    assert re.search(r"test exact accuracy [\d.]+ \(16 examples\)", train[2]), train
    assert rows["total"][1] == "PASS", rows["total"]
    assert all(float(cells[3]) >= 0 for key, cells in rows.items() if key[0].isdigit() and cells[3])


def test_device_check_reports_a_part_out_of_time_and_fails(tmp_path):
    """A budget too short for anything: the parts that run are killed and reported, the others
    still run, and the exit status says so."""
    r, out = run_device_check(tmp_path, "--device_check_budget=3", timeout=120)
    assert r.returncode == 1, r.stdout[-4000:] + r.stderr[-2000:]
    _, rows = table_rows(out.read_text())
    assert rows["3a. op and step benchmarks, eager"][1].startswith("TIMEOUT: killed after")
    assert rows["4. train mini Sudoku (train.py)"][1].startswith("TIMEOUT: killed after")
    assert rows["2. CUDA tests (pytest)"][1] == "skipped: no CUDA"
    assert rows["total"][1] == "FAIL"


def test_device_check_runs_every_test_that_needs_cuda():
    """CUDA_TESTS in bench.py names each test file that skips without CUDA or runs 'cuda' cases
    only where it is present."""
    tree = ast.parse(open(os.path.join(ROOT, "bench.py")).read())
    listed = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                  and any(getattr(t, "id", None) == "CUDA_TESTS" for t in node.targets))
    files = {t.split("::")[0] for t in listed}
    for name in sorted(os.listdir(os.path.join(ROOT, "tests"))):
        if not (name.startswith("test_") and name.endswith(".py")):
            continue
        text = open(os.path.join(ROOT, "tests", name)).read()
        if re.search(r"skipif\(\s*not torch\.cuda\.is_available\(\)", text) or \
                re.search(r"\[\"cuda\"\] if torch\.cuda\.is_available\(\)", text):
            assert f"tests/{name}" in files, f"tests/{name} needs CUDA but is not in bench.py's CUDA_TESTS"


def test_time_to_accuracy_runs_every_variant_and_prints_the_table(tmp_path):
    """--time_to_accuracy on the mini Sudoku, cut to 3 steps a run: every variant trains with its
    settings (the logs show them), and the table has a row per variant with its seed count."""
    out = tmp_path / "tta"
    r = subprocess.run([sys.executable, "bench.py", "--time_to_accuracy=sudoku", "--tta_seeds=1", f"--tta_out={out}",
                        "--tta_args=--max_steps=3 --global_batch_size=16 --eval_max_examples=16 --compile=False"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()
            if line.split() and line.split()[0] in ("baseline", "depth", "weight", "both")}
    assert set(rows) == {"baseline", "depth", "weight", "both"}, r.stdout
    for v, cells in rows.items():
        assert cells[1] == "0/1" and cells[2] == "-" and cells[3] == "-", cells  # 95% is out of reach in 3 steps
        assert 0 <= float(cells[4]) <= 1, cells  # the final exact accuracy
        log = (out / "sudoku" / f"{v}-seed0.log").read_text()
        assert ("training at depth H_cycles=1 L_cycles=1" in log) == (v in ("depth", "both")), (v, log)
        assert ("supervision_decay = 0.7" in log) == (v in ("weight", "both")), (v, log)
    r = subprocess.run([sys.executable, "bench.py", "--time_to_accuracy=chess"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "unknown time_to_accuracy task 'chess'" in r.stderr
