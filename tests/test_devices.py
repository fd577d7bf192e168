"""``train --devices``: two replicas (MirroredStrategy over two logical CPU devices) train the same model as
one device, for both presets, through a resume; too many devices is one error line; ``all`` without a GPU
is one CPU device.

The commands run in a subprocess (tests/two_devices.py) because logical devices must exist before TensorFlow
starts. GPUs are hidden there (CUDA_VISIBLE_DEVICES=""), so the device count is the same on every machine.

Tolerances (also in README, "Scaling out"): the first logged loss (one forward pass: same batch, same initial
weights, global-batch statistics) within ``FIRST_TOL`` = 1e-5 of the one-device run's, and every later logged
loss (per batch, and each epoch's val_loss) within ``CURVE_TOL`` = 0.5 % of it. Measured on the development
machine (2-core Xeon VM): first step ≤ 1e-7; curves ≤ 0.15 % (default preset, 10 steps), ≤ 0.01 % (seed, 26).
Not bit-identical because synchronised BatchNorm computes the variance as E[x²] − E[x]² from the replicas'
sums and the gradients are summed in another order; Adam then turns those last-digit differences in
near-zero gradients into weight differences of up to a learning rate. Each thing this design gets right,
when broken on purpose, breaks these bounds: per-replica BatchNorm (first step off by 1.3e-3 (seed) /
1.2e-2 (default); curves 2.3 % / 15 %), per-replica negatives (2.4e-2; 16 %), Keras drawing a batch before
training (8.7e-3 / 0.10; 2.9 % / 16 %).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from siamese_core.core.config import RunConfig, TrainConfig
from siamese_core.core.errors import SiameseError

ROOT = Path(__file__).resolve().parents[1]
FIRST_TOL = 1e-5
CURVE_TOL = 5e-3


def _run(commands: list, tmp: Path, name: str) -> list[dict]:
    cmds, res = tmp / f"{name}.commands.json", tmp / f"{name}.results.json"
    cmds.write_text(json.dumps([[str(a) for a in argv] for argv in commands]))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "two_devices.py"), str(cmds), str(res)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(res.read_text())


def _metrics(ws: Path, run: str) -> list[dict]:
    return [json.loads(line) for line in (ws / "runs" / run / "metrics.jsonl").read_text().splitlines() if line]


def _status(ws: Path, run: str) -> dict:
    return json.loads((ws / "runs" / run / "status.json").read_text())


def _assert_same_curve(ws: Path, one: str, two: str, epochs: int) -> None:
    a, b = _metrics(ws, one), _metrics(ws, two)
    assert [(r["kind"], r["epoch"], r.get("step")) for r in a] == [(r["kind"], r["epoch"], r.get("step")) for r in b]
    assert {r["epoch"] for r in a} == set(range(1, epochs + 1))
    losses = [r["loss"] for r in a if r["kind"] == "batch"]
    assert len(set(losses)) > 1, "the curve must move, or matching it proves nothing"
    assert abs(a[0]["loss"] - b[0]["loss"]) <= FIRST_TOL, (a[0], b[0])
    for ra, rb in zip(a, b):
        for key in ("loss", "val_loss"):
            if key in ra:
                assert abs(ra[key] - rb[key]) <= CURVE_TOL * abs(ra[key]), (key, ra, rb)


def _train(ws, preset, run, devices, *extra):
    return ["--workspace", ws, "train", "--dataset", "t", "--preset", preset, "--epochs", 1, "--seed", 3,
            "--run-id", run, "--devices", devices, "--verbose", 0, *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both presets trained for one epoch on one and on two devices, then both default runs resumed for a
    second epoch, plus the refusals; returns (workspace, {run id or label: result})."""
    tmp = tmp_path_factory.mktemp("devices")
    ws = tmp / "ws"
    first = [["--workspace", ws, "prepare", "--name", "t", "--limit", 24, "--size", 32]]
    # seed: one pass over its pairs at batch 8 (the last batch is short and splits unevenly)
    first += [_train(ws, "seed", f"seed-{n}", n, "--batch-size", 8) for n in (1, 2)]
    # default: in-batch negatives, augmentation, capped steps; 12 pairs a step = 6 per replica
    first += [_train(ws, "default", f"def-{n}", n, "--batch-size", 12, "--steps-per-epoch", 5) for n in (1, 2)]
    results = _run(first, tmp, "first")
    for n in (1, 2):  # as if each default run had been stopped after the first of two epochs
        d = ws / "runs" / f"def-{n}"
        cfg = json.loads((d / "config.json").read_text())
        cfg["train"]["epochs"] = 2
        (d / "config.json").write_text(json.dumps(cfg))
        st = json.loads((d / "status.json").read_text())
        (d / "status.json").write_text(json.dumps({**st, "status": "stopped"}))
    second = [["--workspace", ws, "train", "--resume", f"def-{n}", "--verbose", 0] for n in (1, 2)]
    second += [_train(ws, "default", "three", 3, "--steps-per-epoch", 1),
               _train(ws, "default", "all", "all", "--batch-size", 12, "--steps-per-epoch", 1)]
    results += _run(second, tmp, "second")
    labels = ["prepare", "seed-1", "seed-2", "def-1", "def-2", "resume-1", "resume-2", "three", "all"]
    return ws, dict(zip(labels, results))


@pytest.mark.slow
def test_two_devices_train_the_seed_model_as_one_does(runs):
    ws, res = runs
    assert res["seed-1"]["rc"] == 0 and res["seed-2"]["rc"] == 0, (res["seed-1"], res["seed-2"])
    _assert_same_curve(ws, "seed-1", "seed-2", epochs=1)
    assert _status(ws, "seed-2")["device"].startswith("2 × logical CPU devices on CPU")
    assert "MirroredStrategy" in _status(ws, "seed-2")["device"]
    assert "MirroredStrategy" not in _status(ws, "seed-1")["device"]
    assert json.loads((ws / "runs" / "seed-2" / "config.json").read_text())["train"]["devices"] == 2
    assert json.loads((ws / "runs" / "seed-1" / "config.json").read_text())["train"]["devices"] == 1


@pytest.mark.slow
def test_two_devices_train_the_in_batch_model_as_one_does_through_a_resume(runs):
    ws, res = runs
    for key in ("def-1", "def-2", "resume-1", "resume-2"):
        assert res[key]["rc"] == 0, res[key]
    _assert_same_curve(ws, "def-1", "def-2", epochs=2)  # epoch 2 came from each run's checkpoint
    for run in ("def-1", "def-2"):
        assert _status(ws, run)["status"] == "finished"
        assert json.loads((ws / "runs" / run / "checkpoint.json").read_text())["epoch"] == 2
    assert "MirroredStrategy" in _status(ws, "def-2")["device"]  # resumed on two devices, as configured


@pytest.mark.slow
def test_more_devices_than_the_machine_has_is_one_error_line(runs):
    ws, res = runs
    r = res["three"]
    assert r["rc"] == 2
    assert r["stderr"] == ["error: devices=3: this machine has no GPU and 2 CPU device(s); choose 2 or fewer "
                           "(--devices 2), or 'all'"], r["stderr"]
    assert not (ws / "runs" / "three").exists()  # refused before anything was written


@pytest.mark.slow
def test_all_without_a_gpu_is_one_cpu_device_and_says_so(runs):
    ws, res = runs
    r = res["all"]
    assert r["rc"] == 0, r
    said = [ln for ln in r["stderr"] if ln.startswith("devices:")]
    assert len(said) == 1 and said[0].endswith("--devices all found no GPU, so it trains on 1 CPU device"), said
    st = _status(ws, "all")
    assert "MirroredStrategy" not in st["device"] and "found no GPU" in st["device"]
    assert json.loads((ws / "runs" / "all" / "config.json").read_text())["train"]["devices"] == "all"


@pytest.mark.parametrize("value, stored", [(1, 1), ("2", 2), ("all", "all"), (" ALL ", "all")])
def test_devices_choice_is_stored_as_a_count_or_all(value, stored):
    assert RunConfig.build("d", "seed", devices=value).train.devices == stored
    assert RunConfig.for_preset("d", "default").train.devices == 1  # the default: one device, no strategy


@pytest.mark.parametrize("value", [0, -1, "two", 1.5, True, ""])
def test_a_bad_devices_value_is_refused_naming_it(value):
    with pytest.raises(SiameseError) as e:
        TrainConfig(devices=value)
    msg = str(e.value)
    assert msg.startswith(f"devices={value!r} ") and "'all'" in msg and "\n" not in msg


def test_an_old_config_without_devices_trains_on_one_device():
    d = RunConfig.for_preset("d", "seed").to_dict()
    del d["train"]["devices"]
    assert RunConfig.from_dict(d).train.devices == 1


def test_train_page_refuses_more_devices_than_the_server_has_in_one_line(app_ws):
    from apptools import open_app, ok, widget
    from siamese_core.learn.devices import available
    from siamese_core.runs.registry import list_runs

    _, have = available()
    too_many = next((c for c in ("2", "3", "4", "8") if int(c) > have), None)
    if too_many is None:
        pytest.skip(f"this machine has {have} devices, as many as the page offers")
    before = list_runs(app_ws)
    at = open_app("train")
    widget(at, "selectbox", "train_devices").set_value(too_many)
    widget(at, "text_input", "train_run_id").set_value("toomany")
    widget(at, "button", "train_launch").click().run()
    ok(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith(f"devices={too_many}: this machine has ") \
        and "\n" not in errors[0], errors
    assert list_runs(app_ws) == before and "toomany" not in list_runs(app_ws)  # nothing launched or written
