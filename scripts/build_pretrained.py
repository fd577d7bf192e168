"""Rebuild the model bundled with the package (``siamese_core/pretrained/``) with one command.

    python scripts/build_pretrained.py [--seed 0] [--epochs 20]

Recipe (all seeded). The places of ``../shared/data/temporal-dev`` (real places on two dates) and the tiles of
``../shared/data/aerial-sample`` are split three ways by a hash of their names: ``test`` (25 %, never used
but to report), and of the rest ``fusion`` (30 %) and ``train`` (70 %).

- **Train:** labelled pairs of every kind (``make-pairs``) from the train places and tiles; their same-place
  pairs become a ``pairs-csv`` dataset, one group per tile A with all its second views: the other date, turned
  and zoomed, covering only 30-70 % of A, 2-4× coarser, changed (:mod:`siamese_core.data.change`), rotated,
  distorted. The ``default`` preset trains on it with in-batch negatives.
- **Fusion:** the fused verdict (:mod:`siamese_core.judge.fusion`: threshold and uncertain band) is
  calibrated on pairs of every kind from the fusion places, which the network never saw: so it weighs the
  learned distance as it does on new places, not as on its training places.
- **Test:** the model card reports pairs of every kind from the test places and tiles.

Takes about an hour on a 2-core CPU. The data stay outside the repository; only the model (a few MB) is
bundled.

    python scripts/build_pretrained.py --recalibrate

keeps the bundled model and redoes only its calibration and test numbers (a few minutes): what a change to
the geometric step needs, since the fused verdict weighs the keypoint evidence. It records in ``build.json``
(``trained``) and the model card which command and commit trained the network it kept. Training is seeded, so the
first command alone gives the same network again from the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from siamese_core.data.images import IMAGE_EXTENSIONS  # noqa: E402
from siamese_core.data.pairsets import make_pairset, split_of  # noqa: E402
from siamese_core.runs.run import Run  # noqa: E402

TEST_FRACTION = 0.25      # places and tiles only ever used to report
FUSION_FRACTION = 0.3     # of the rest: where the fused verdict is calibrated (never trained on)
TRAIN_PER_PLACE = 30      # make-pairs windows per training place (each: 2 pairs of every kind)
FUSION_PER_PLACE = 10
STEPS_PER_EPOCH = 60      # batches of 64 same-place pairs per epoch


def stage(temporal: Path, aerial: Path, out: Path) -> dict:
    """``out/train`` and ``out/fusion``, each an A/B folder (``ab/``) and a tile folder (``tiles/``) of links to
    the calibration-split places and tiles that hash into that part (see the module docstring)."""
    n = {"train": {"places": 0, "tiles": 0}, "fusion": {"places": 0, "tiles": 0}}
    for part in n:
        for d in ("ab/A", "ab/B", "tiles"):
            (out / part / d).mkdir(parents=True)
    for pa in sorted((temporal / "A").iterdir()):
        pb = next((p for p in (temporal / "B").glob(pa.stem + ".*")), None)
        if pb and split_of(pa.stem, TEST_FRACTION) == "calibration":
            part = part_of(pa.stem)
            os.symlink(pa.resolve(), out / part / "ab" / "A" / pa.name)
            os.symlink(pb.resolve(), out / part / "ab" / "B" / (pa.stem + pb.suffix))
            n[part]["places"] += 1
    for p in sorted(q for q in aerial.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS):
        rel = str(p.relative_to(aerial))
        if split_of(rel, TEST_FRACTION) == "calibration":
            part = part_of(rel)
            link = out / part / "tiles" / rel  # in its class folder: half the different-place partners that
            link.parent.mkdir(parents=True, exist_ok=True)  # make-pairs draws come from the tile's own folder
            os.symlink(p.resolve(), link)
            n[part]["tiles"] += 1
    return n


def part_of(name: str) -> str:
    """'fusion' or 'train' for a calibration-split place or tile (stable, like split_of)."""
    return "fusion" if split_of("fusion:" + name, FUSION_FRACTION) == "test" else "train"


def same_place_pairs(pairs_csv: Path) -> Path:
    """The same-place rows of a labelled pairs CSV, as the ``pairs-csv`` source of the training dataset."""
    import csv
    out = pairs_csv.with_name("same.csv")
    with open(pairs_csv, newline="") as f, open(out, "w", newline="") as g:
        rows = [r for r in csv.DictReader(f) if r["label"] == "0"]
        w = csv.DictWriter(g, fieldnames=["image_a", "image_b", "label", "kind"])
        w.writeheader()
        w.writerows(rows)
    return out


def train_minutes(run: Run) -> float:
    """Wall time of the training itself, from the run's own metrics (first batch to last epoch)."""
    times = [r["time"] for r in run.metrics()]
    return round((max(times) - min(times)) / 60, 1)


def _pct(v) -> str:
    return "–" if v is None else f"{v:.0%}" if v in (0, 1) else f"{v:.1%}"


def git_commit() -> str:
    """The last commit that changed the bundled network (what a recalibration records as its origin), or "" without
    git."""
    import subprocess
    try:
        return subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h", "--", "siamese_core/pretrained/model.keras"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def model_card(build: dict, fusion: dict) -> str:
    rows = "\n".join(
        f"| {k} | {e['pairs']} | {e['roc_auc_score']} | {_pct(e.get('recall'))} | {_pct(e.get('false_same'))} | "
        f"{_pct(e.get('undecided'))} | {_pct(e.get('accuracy_decided'))} | {e['roc_auc_distance']} | "
        f"{e['roc_auc_inliers']} | {e.get('roc_auc_structure_identity')} |" for k, e in build["test"].items())
    staged = build["staged"]
    train, fit = staged.get("train", staged), staged.get("fusion", {})
    band = fusion.get("band", {})
    t = build.get("trained")
    recal = (f" The network itself is the one `{t.get('command', '?')}` trained on {t.get('built', '?')} (bundled by commit "
             f"{t.get('commit') or '?'}, whose generator of simulated views it saw); `--recalibrate` kept it and redid the "
             f"fused verdict and the numbers below with the code of this commit." if t else "")
    return f"""# Model card: the bundled run `pretrained`

What answers `score` with no `--run`, and Compare on a fresh workspace. Rebuilt by one command:

    {build['command'].strip()}

(seed {build['seed']}, {build['epochs']} epochs; built {build['built']}; {build['train_minutes']} min to train on the build
machine's CPU).{recal} The files here are that command's output, nothing edited by hand: `model.keras` (the twin
network, loads with Keras `safe_mode`), `verdict.json` (the fused verdict: fusion and threshold), `config.json`,
`calibration_scores.npz` (the fused scores of the calibration pairs, for the Threshold page), `reference.npz`
(2,000 training tiles' embeddings and colour statistics, for the "unlike anything it was trained on" warning)
and `build.json`.

## What it is
- **Learned part:** the `default` preset (per-tile standardisation, disc mask, ReLU/BN CNN with global pooling,
  L2-normalised 128-d embeddings) trained with in-batch negatives on same-place pairs of every kind: the other
  date, turned and zoomed, covering only 30-70 % of the tile, 2-4× coarser, changed (new buildings, cleared
  fields, new roads, another viewing angle), rotated, distorted; with rotation, mirror, zoom, exposure, colour
  gain, gamma, saturation, haze, noise, resolution loss, blur and occlusion on the fly.
- **Geometric part:** SIFT/ORB keypoints + RANSAC similarity transform (no training); a coarser tile is also
  matched at the other tile's pixel size; the edge agreement as laid, once aligned, over the best-agreeing
  quarter of the tiles (the part of a changed place that stayed), and how sharply it peaks as laid (one place
  agrees at one placement; look-alike layouts such as two freeways agree at every placement).
- **Fused verdict:** boosted trees with monotone constraints (evidence never counts backwards) over
  {', '.join(fusion['names'])}; threshold {fusion['threshold']:.4f} on the fused score (lower = more alike),
  `uncertain` from {fusion['threshold'] - band.get('below', 0):.4f} to {fusion['threshold'] + band.get('above', 0):.4f}.
  Fitted on {fusion['fitted_on']}.

## Data it saw (and their licences)
- Training: {train.get('places')} places of the `temporal-dev` sample (Onera Satellite Change Detection
  dataset, Daudt et al., IGARSS 2018; Sentinel-2 RGB renderings; contains modified Copernicus Sentinel data
  2015–2018, free and open under the Copernicus data licence), cut into windows on two dates; and
  {train.get('tiles')} tiles of the UC Merced Land Use sample (USGS National Map aerial imagery, public
  domain), each with a simulated second acquisition.
- Calibration of the fused verdict: labelled pairs (`make-pairs`) of every kind from {fit.get('places')} other
  places and {fit.get('tiles')} other tiles, which the network never saw; half of a tile's different-place
  partners come from its own class folder (another freeway, another apron), as in the test split.
- Held out: places and tiles whose name hashes into the `test` split (`siamese_core.data.pairsets.split_of`,
  25 %) were never used for training or calibration. None of these images are in the repository.

## Numbers on the held-out test split
`python bench/accuracy.py` (pairs drawn from the test places and tiles; ROC-AUC with "same place" as the
positive class; "same found" and "false same" at the bundled threshold; "undecided": inside the uncertain
band; "decided right": accuracy on the other pairs):

| kind | pairs | ROC-AUC fused | same found | false same | undecided | decided right | learned distance alone | inliers alone | edges as laid alone |
|---|---|---|---|---|---|---|---|---|---|
{rows}

These are development numbers on small samples (6 test places of 10 m Sentinel-2 imagery, ~150 aerial
tiles): they show the parts work together, not how the model does on your imagery. Measure that with
`make-pairs` + `evaluate --pairs` on your own tiles, and `calibrate --run pretrained --as NAME` to fit the
fused verdict to them.

## Limits
- Places whose texture has changed completely leave the keypoints with nothing to match; the verdict then
  rests on the edge agreement as laid (same frame) and the learned distance, and says `uncertain` when both
  are in between.
- A second tile that covers only part of the first, on another date and turned, is the hardest case: when
  the keypoints find nothing, only the learned distance is left.
- Blank, cloud-covered or flat tiles get a score with the reason "no keypoints" in the `geometry` column.
"""


def write_reference(run_id: str = "pretrained-build", dataset: str = "train", out: Path | None = None,
                    seed: int = 0) -> Path:
    """Write the run's ``reference.npz`` (what it was trained on: :mod:`siamese_core.judge.familiarity`) from its
    training dataset, into the run (or ``out``). The workspace is ``$SIAMESE_WORKSPACE``."""
    from siamese_core.data.store import open_dataset
    from siamese_core.judge.familiarity import build_reference, save_reference
    from siamese_core.judge.inference import Scorer
    scorer = Scorer.from_run(run_id)
    ds = open_dataset(dataset)
    ref = build_reference(scorer, ds.images, seed=seed, groups=ds.groups)
    path = save_reference(Run(out or scorer.run).reference_path, ref)
    print(f"reference of run {run_id!r}: {ref['count']} tiles of dataset {dataset!r}, nn_p99 {ref['nn_p99']:.3f} "
          f"-> {path} ({path.stat().st_size / 1e6:.2f} MB)", flush=True)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--temporal", default=str(ROOT.parent / "shared/data/temporal-dev"))
    ap.add_argument("--aerial", default=str(ROOT.parent / "shared/data/aerial-sample"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--work", help="working folder (default: a temporary one, removed at the end)")
    ap.add_argument("--out", default=str(ROOT / "siamese_core/pretrained"))
    ap.add_argument("--reuse", action="store_true", help="with --work: keep the model trained there, redo the rest")
    ap.add_argument("--recalibrate", action="store_true",
                    help="keep the bundled model as it is (no training): redo its calibration and its test numbers, "
                         "e.g. after a change to the geometric step")
    ap.add_argument("--reference-only", action="store_true",
                    help="with --work: only write reference.npz of the model trained there into --out (no retraining)")
    args = ap.parse_args()
    if args.reference_only:
        if not args.work or not Run(Path(args.work) / "workspace/runs/pretrained-build").has_model():
            print("error: --reference-only needs --work WORK with WORK/workspace/runs/pretrained-build/model.keras",
                  file=sys.stderr)
            return 2
        os.environ["SIAMESE_WORKSPACE"] = str(Path(args.work) / "workspace")
        write_reference(out=Path(args.out), seed=args.seed)
        return 0
    temporal, aerial = Path(args.temporal), Path(args.aerial)
    for p in (temporal, aerial):
        if not p.is_dir():
            print(f"error: {p}: not found; pass --temporal/--aerial", file=sys.stderr)
            return 2
    work = Path(args.work or tempfile.mkdtemp(prefix="pretrained-"))
    os.environ["SIAMESE_WORKSPACE"] = str(work / "workspace")
    from siamese_core.core.config import DataConfig, RunConfig
    from siamese_core.data.store import build_dataset
    from siamese_core.judge.calibration import calibrate, evaluate_pairs
    from siamese_core.judge.inference import Scorer
    from siamese_core.learn.train import run_training
    from siamese_core.runs.registry import create_run

    run = Run(work / "workspace" / "runs" / "pretrained-build")
    minutes, trained = None, None
    if args.recalibrate:  # the bundled model and its reference, as they are
        run.path.mkdir(parents=True)
        for f in Run.BUNDLE + Run.LEGACY_VERDICT:  # a bundle made before verdict.json has the two older files
            if (Path(args.out) / f).exists():
                shutil.copy2(Path(args.out) / f, run.path / f)
        old = json.loads((Path(args.out) / Run.BUILD).read_text())
        staged, minutes = old["staged"], old["train_minutes"]
        trained = old.get("trained") or {k: old[k] for k in ("command", "built") if k in old} | {"commit": git_commit()}
    elif args.reuse and run.has_model():  # calibrate and measure an already trained model again
        staged = json.loads((work / "staged.json").read_text())
    else:
        staged = stage(temporal, aerial, work / "staged")
        (work / "staged.json").write_text(json.dumps(staged))
        print(f"staged {staged}", flush=True)
        train = work / "staged" / "train"
        pairs = make_pairset(work / "trainpairs", train / "ab", train / "tiles", per_place=TRAIN_PER_PLACE,
                             n_tiles=staged["train"]["tiles"], seed=args.seed + 3)
        build_dataset(DataConfig(source="pairs-csv", path=str(same_place_pairs(pairs)), variants=1, seed=args.seed),
                      "train")
        cfg = RunConfig.for_preset("train", "default", epochs=args.epochs, seed=args.seed,
                                   steps_per_epoch=STEPS_PER_EPOCH)
        run = create_run(cfg, run_id="pretrained-build")
        run_training(run, verbose=2)
    if not args.recalibrate:
        write_reference(seed=args.seed)  # reference.npz: what the model saw, for the "unfamiliar tile" warning
    fusion = work / "staged" / "fusion"
    if not fusion.is_dir():  # --recalibrate: the parts are staged afresh (links only)
        stage(temporal, aerial, work / "staged")
    cal = make_pairset(work / "calib", fusion / "ab", fusion / "tiles", per_place=FUSION_PER_PLACE,
                       n_tiles=sum(not p.is_dir() for p in (fusion / "tiles").rglob("*")), seed=args.seed + 1)
    test = make_pairset(work / "test", temporal, aerial, per_place=10, n_tiles=100, split="test", seed=args.seed + 2)
    scorer = Scorer.from_run("pretrained-build")
    rep = calibrate(scorer, cal)
    scorer = Scorer.from_run("pretrained-build")
    ev = evaluate_pairs(scorer, test)
    bundle = run.export_bundle(Path(args.out))  # the bundle carries no paths of the build machine
    (bundle.path / Run.BUILD).write_text(json.dumps({
        "command": "python scripts/build_pretrained.py" + (" --recalibrate" if args.recalibrate else "")
                   + (f" --seed {args.seed}" if args.seed else "") + (f" --epochs {args.epochs}" if args.epochs != 20 else ""),
        **({"trained": trained} if trained else {}),
        "seed": args.seed,
        "epochs": args.epochs, "staged": staged,
        "train_minutes": minutes or train_minutes(run),
        "calibration": {k: rep[k] for k in ("pairs", "roc_auc", "accuracy", "undecided")}, "test": ev["kinds"],
        "built": time.strftime("%Y-%m-%d %H:%M")}, indent=2))
    (bundle.path / Run.MODEL_CARD).write_text(model_card(json.loads((bundle.path / Run.BUILD).read_text()),
                                                         bundle.fusion_dict()))
    print(json.dumps(ev["kinds"], indent=2))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
