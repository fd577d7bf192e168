"""Embed tiles and score pairs over archives that outgrow one process: Ray Data jobs writing parquet shards.

Why this module exists: :meth:`Scorer.embed` and :func:`judge_rows` run in one Python process. An archive of
millions of tiles (or a pairs CSV of millions of rows) needs many processes, on one machine or a cluster, and a
job of hours must survive being stopped. Ray Data does the scheduling; this package only cuts the input into
shards, runs one model per worker (:class:`~siamese_core.scale.workers.Worker`: a callable class that loads the run
once, used with ``map_batches`` on an actor pool) and makes every shard a file that is either complete or absent.

The parts: :mod:`.plan` cuts the input into shards and keys them, :mod:`.shards` is the output folder's
protocol, :mod:`.workers` computes one shard; this module connects to Ray, runs the pending shards on an actor
pool, and ties it together as the two jobs, :func:`embed` and :func:`score_pairs`.

Ray is optional (``requirements-scale.txt``): this module imports without it and says so in one line when a job
needs it. A job with nothing left to compute does not start Ray at all.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import warnings
from pathlib import Path

from ..core.config import workspace_dir
from ..core.errors import SiameseError
from ..core.files import write_json_atomic
from .plan import (SHARD_SIZE, Plan, check_shard_size, dataset_tasks, folder_tasks, pairs_tasks, parquet_tasks, plan,
    run_stamp)
from .shards import FORMAT, PART, open_out, part_name, shard_done, tidy
from .workers import Worker

INSTALL = "pip install -r requirements-scale.txt"


def _ray():
    """The ray module, or a one-line SiameseError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise SiameseError(f"this command runs on Ray, which is not installed; install it with: {INSTALL}") from None
    return ray


def _cause(e: BaseException) -> BaseException:
    """The user's exception inside Ray's wrappers (RayTaskError → UserCodeException → ...)."""
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        nxt = getattr(e, "cause", None) or e.__cause__
        if not isinstance(nxt, BaseException):
            break
        e = nxt
    return e


def ray_connected() -> bool:
    """Whether this process already has a Ray session (then jobs run there, whatever the address)."""
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


def _connect(address: str | None):
    """Ray, connected: the session already open in this process, the cluster at ``address``, else a new local
    one. Returns (ray, started_here)."""
    ray = _ray()
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise SiameseError(f"could not start or reach {where} ({first}); check --ray-address (host:port of the "
                           f"head node, or 'auto') or leave it out for a local Ray") from None
    return ray, True


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A host:port address must answer a TCP connection: Ray itself waits minutes for an address that is wrong."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\[\]]+?)\]?:(\d+)", (address or "").strip())
    if not m:
        return  # no address (a local Ray), or 'auto'
    import socket
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except OSError as e:
        raise SiameseError(f"--ray-address {address!r}: nothing answers there ({e.strerror or e}); give the head "
                           f"node's host:port (ray start --head prints it), or leave it out for a local Ray") from None


def _quiet_ray_data():
    import ray.data
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False       # the CLI draws one tqdm bar of its own
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # a failure becomes one SiameseError line instead


def _default_workers(ray, gpus_per_worker: float, pending: int) -> int:
    res = ray.cluster_resources()
    if gpus_per_worker:
        n = int(res.get("GPU", 0) // gpus_per_worker)
        if n < 1:
            raise SiameseError(f"--gpus-per-worker {gpus_per_worker} asks for GPUs, but the Ray cluster has "
                               f"{res.get('GPU', 0)}; leave it at 0 on CPU machines")
    else:
        n = int(res.get("CPU", 1) // 2)  # TensorFlow already spreads one model's work over a few cores
    return max(1, min(n, pending))


def run_plan(p: Plan, out, workspace=None, workers: int | None = None, gpus_per_worker: float = 0.0,
        address: str | None = None, progress=None) -> dict:
    """Compute every shard of ``p`` that ``out`` does not already hold, on Ray; then write ``job.json``.

    ``progress(done_rows, total_rows)`` counts inputs (kept shards count as done at once). Returns a summary:
    shards, kept, computed, rows, errors (the count), failures (up to 20 (name or line, reason)), out."""
    out = Path(out).expanduser()
    if not out.is_dir() or any(not shard_done(out / part_name(s.index), s) for s in p.shards):
        _ray()  # Ray missing or a wrong address: fail before anything is written
        if not ray_connected():
            _check_reachable(address)
    created = not out.exists()
    out, lock = open_out(out)
    try:
        tidy(out, len(p.shards))
        pending = [s for s in p.shards if not shard_done(out / part_name(s.index), s)]
        if pending:
            (out / "job.json").unlink(missing_ok=True)  # written again once every shard is there
        total = sum(s.rows for s in p.shards)
        done = total - sum(s.rows for s in pending)
        if progress:
            progress(done, total)
        if pending:
            done = _execute(p, pending, out, workspace, workers, gpus_per_worker, address, progress, done, total)
        missing = [s.index for s in p.shards if not shard_done(out / part_name(s.index), s)]
        if missing:  # not written, or overwritten meanwhile by a worker of an earlier, killed job
            raise SiameseError(f"{out}: shard {part_name(missing[0])} was not written; run the same command again")
        summary = _summary(p, out, len(p.shards) - len(pending), len(pending))
        write_json_atomic(out / "job.json", {"format": FORMAT, "kind": p.kind, "run": p.run_dir.name,
                                             "source": p.source, "shards": len(p.shards),
                                             "keys": [s.key for s in p.shards], "rows": summary["rows"],
                                             "errors": summary["errors"],
                                             "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return summary
    except BaseException:
        if created and not any(PART.match(f.name) for f in out.iterdir()):  # a failed first run leaves no folder
            (out / ".lock").unlink(missing_ok=True)
            try:
                out.rmdir()
            except OSError:
                pass
        raise
    finally:
        os.close(lock)


def _execute(p: Plan, pending: list, out: Path, workspace, workers, gpus_per_worker, address, progress,
             done: int, total: int) -> int:
    ray, started = _connect(address)
    try:
        _quiet_ray_data()
        import ray.data
        n = int(workers) if workers else _default_workers(ray, gpus_per_worker, len(pending))
        if n < 1:
            raise SiameseError(f"--workers must be at least 1, got {workers}")
        items = [{"shard": s.index, "key": s.key, "task": json.dumps(s.task)} for s in pending]
        # workers import this package from where the driver did (a local Ray; a cluster installs it on every node)
        pkg = str(Path(__file__).resolve().parents[2])
        env = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
               "PYTHONPATH": os.pathsep.join(x for x in (pkg, os.environ.get("PYTHONPATH", "")) if x)}
        with warnings.catch_warnings():
            # max_restarts=0: a worker that dies (e.g. out of memory) ends the job with one line, and the next run
            # resumes from the shards already written; Ray 2.60 marks passing it this way as deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                Worker, batch_size=1, batch_format="numpy",
                fn_constructor_args=(p.kind, p.run, str(workspace_dir(workspace)), str(out), p.fusion),
                compute=ray.data.ActorPoolStrategy(size=min(n, len(pending))),
                num_cpus=1, num_gpus=gpus_per_worker or None, runtime_env={"env_vars": env}, max_restarts=0)
        try:
            for r in ds.iter_rows():
                if r["fatal"]:
                    raise SiameseError(f"a Ray worker could not start: {r['fatal']}")
                done += int(r["rows"])
                if progress:
                    progress(done, total)
        except SiameseError:
            raise
        except Exception as e:
            c = _cause(e)
            if isinstance(c, SiameseError):
                raise SiameseError(str(c)) from None
            first = (str(c).strip().splitlines() or [""])[0][:300]
            raise SiameseError(f"a Ray worker failed ({type(c).__name__}: {first}); shards written so far are kept: "
                               f"run the same command again to resume") from None
    finally:
        if started:
            ray.shutdown()
    return done


def _summary(p: Plan, out: Path, kept: int, computed: int) -> dict:
    import pyarrow.parquet as pq
    rows, errors, failures = 0, 0, []
    name = "name" if p.kind == "embed" else "line"
    for s in p.shards:
        t = pq.read_table(out / part_name(s.index), columns=[name, "error"])
        rows += t.num_rows
        err = t.column("error").to_pylist()
        bad = [i for i, e in enumerate(err) if e]
        errors += len(bad)
        if bad and len(failures) < 20:
            names = t.column(name).to_pylist()
            failures.extend((names[i], err[i]) for i in bad[:20 - len(failures)])
    return {"out": str(out), "shards": len(p.shards), "kept": kept, "computed": computed, "rows": rows,
            "errors": errors, "failures": failures}


def embed(out, images=None, parquet=None, dataset=None, column: str = "", run: str | None = None, workspace=None,
          shard_size: int | None = SHARD_SIZE, workers: int | None = None, gpus_per_worker: float = 0.0,
          address: str | None = None, progress=None) -> dict:
    """Embed every tile of one input (a folder of ``images``, a ``parquet`` file or folder, or a workspace
    ``dataset``) with run ``run`` (None: the bundled model) into parquet shards under ``out``. Resumable: see
    the module docstring. Returns the summary of :func:`run_plan`."""
    given = [x for x in (images, parquet, dataset) if x]
    if len(given) != 1:
        raise SiameseError("embed needs exactly one input: --images DIR, --parquet FILE or --dataset NAME "
                           f"(got {len(given)})")
    shard_size = check_shard_size(shard_size)
    if images:
        source, tasks = folder_tasks(images, shard_size)
    elif parquet:
        source, tasks = parquet_tasks(parquet, shard_size, column)
    else:
        source, tasks = dataset_tasks(dataset, workspace, shard_size)
    return run_plan(plan("embed", source, tasks, run, workspace), out, workspace, workers, gpus_per_worker, address,
               progress)


def score_pairs(pairs, out, run: str | None = None, workspace=None, threshold: float | None = None,
                shard_size: int | None = SHARD_SIZE, workers: int | None = None, gpus_per_worker: float = 0.0,
                address: str | None = None, progress=None) -> dict:
    """Score every row of a pairs CSV like ``score --pairs`` (same judgements, same columns), into parquet
    shards under ``out``. ``threshold`` None: the run's saved threshold. Returns the summary of :func:`run_plan`."""
    from ..runs.run import Run
    shard_size = check_shard_size(shard_size)
    run_dir, _ = run_stamp(run, workspace)
    verdict = Run(run_dir).verdict()  # the fusion and the threshold, read at once
    if threshold is None and verdict["threshold"] is None:
        Run(run_dir).threshold()  # its one-line error
    t = float(verdict["threshold"]["threshold"] if threshold is None else threshold)
    source, tasks = pairs_tasks(pairs, shard_size, t)
    summary = run_plan(plan("score", {**source, "threshold": t}, tasks, run, workspace, verdict["fusion"]), out,
                       workspace, workers, gpus_per_worker, address, progress)
    return {**summary, "threshold": t}


__all__ = ["embed", "score_pairs", "run_plan", "ray_connected", "INSTALL"]
