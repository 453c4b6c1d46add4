"""Merge the branches of per-group stage-two runs into one model with every group.

    python -m tfcartoon.merge runs/elderly runs/kids runs/young_men --out runs/all_groups

Under the strict rule a stage-two run trains only its group's branch: the shared trunk
(and the base branch) stay exactly as the base run or preset left them. Runs trained from
the same base therefore share a bit-identical trunk, and their branches can be put side
by side. The merged folder reads like a run (``config.yaml``, ``checkpoints/``,
``provenance.json`` naming the source runs and their checkpoints' hashes), so
``cartoonize``, ``evaluate`` and the export scripts take it as ``--model``. It holds the
generators only, so it cannot be resumed.

Refused: runs whose trunks differ (the variables that differ are named), runs whose base
branches differ, two runs that trained the same group differently, and models of
different shapes. Groups that no run trained (copies of the base branch) are left out.
"""

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

GENERATORS = ("photo2cartoon", "cartoon2photo")
TRUNK = ("shared_encoder", "shared_decoder")


class MergeError(ValueError):
    """The runs cannot be merged (the message says why)."""


def _parts(group):
    return (f"head_{group}", f"cam_{group}", f"tail_{group}")


def _arrays(run, gen_name, parts):
    """{key: array} of ``parts`` (default: all) of one generator of a loaded run."""
    import numpy as np

    from tfcartoon.training.checkpoints import generator_entries

    generator = getattr(run, gen_name)
    parts = None if parts is None else set(parts)
    return {key: np.asarray(v.numpy()) for key, v in generator_entries(generator, gen_name,
                                                                      parts)}


def _differing(a, b):
    import numpy as np

    return sorted(k for k in a.keys() | b.keys()
                  if k not in a or k not in b or not np.array_equal(a[k], b[k]))


def _named(keys, limit=3):
    shown = ", ".join(keys[:limit])
    verb = "variable differs" if len(keys) == 1 else "variables differ"
    return f"{len(keys)} {verb} ({shown}" + (
        ", ...)" if len(keys) > limit else ")")


def _check_shapes(runs, run_dirs):
    first = runs[0].config
    for run, run_dir in zip(runs[1:], run_dirs[1:]):
        for key in ("ngf", "hourglass_depth"):
            mine, theirs = getattr(first.model, key), getattr(run.config.model, key)
            if mine != theirs:
                raise MergeError(f"{run_dir} has model.{key}={theirs}, {run_dirs[0]} has {mine}")
        if run.config.base_group != first.base_group:
            raise MergeError(f"{run_dir}'s base group is {run.config.base_group!r}, "
                             f"{run_dirs[0]}'s is {first.base_group!r}")


def _check_trunks(runs, run_dirs):
    for gen_name in GENERATORS:
        reference = _arrays(runs[0], gen_name, TRUNK)
        for run, run_dir in zip(runs[1:], run_dirs[1:]):
            differ = _differing(reference, _arrays(run, gen_name, TRUNK))
            if differ:
                raise MergeError(
                    f"{run_dir} and {run_dirs[0]} have different trunks: {_named(differ)}; "
                    "only runs trained from the same base with the strict update rule share "
                    "a trunk and can be merged")


def branch_sources(runs, run_dirs):
    """{group: index of the run whose branch the merged model takes}, base group first.

    Every run must hold the same base branch; a group trained by two runs must have the
    same weights in both.
    """
    from tfcartoon.training.run import trained_groups

    base = runs[0].config.base_group
    sources = {}
    for index, run in enumerate(runs):
        for group in trained_groups(run.config):
            if group not in sources:
                sources[group] = index
                continue
            earlier = sources[group]
            for gen_name in GENERATORS:
                differ = _differing(_arrays(runs[earlier], gen_name, _parts(group)),
                                    _arrays(run, gen_name, _parts(group)))
                if differ and group == base:
                    raise MergeError(f"{run_dirs[index]} and {run_dirs[earlier]} have different "
                                     f"base ({base}) branches: {_named(differ)}")
                if differ:
                    raise MergeError(f"{run_dirs[index]} and {run_dirs[earlier]} both trained "
                                     f"{group!r}, differently: {_named(differ)}; merge one of "
                                     "them")
    ordered = {base: sources.pop(base, 0)}
    ordered.update(sources)
    return ordered


def merge_runs(run_dirs, out_dir):
    """Write the merged model of ``run_dirs`` into the new folder ``out_dir``; returns it."""
    import numpy as np

    from tfcartoon.models.generator import build_generator
    from tfcartoon.precision import dtype_policy
    from tfcartoon.training.checkpoints import FORMAT, generator_entries
    from tfcartoon.training.run import load

    run_dirs, out_dir = check_folders(run_dirs, out_dir, "merge")
    runs = [load(r) for r in run_dirs]
    _check_shapes(runs, run_dirs)
    _check_trunks(runs, run_dirs)
    sources = branch_sources(runs, run_dirs)
    groups = list(sources)
    if len(groups) < 2:
        raise MergeError("none of these runs trained a few-shot group: nothing to merge")
    first = runs[0].config
    config = dataclasses.replace(
        first, groups=groups,
        train=dataclasses.replace(first.train, stage="fewshot", group=None,
                                  update_rule="strict"))
    state = {"step": np.asarray(max(r.step for r in runs), np.int64),
             "format": np.asarray(FORMAT, np.int64)}
    with dtype_policy("float32"):
        for gen_name in GENERATORS:
            merged = build_generator(groups, first.model.ngf, first.model.image_size,
                                     first.model.hourglass_depth, name=gen_name)
            pieces = _arrays(runs[0], gen_name, TRUNK)
            for group, index in sources.items():
                pieces.update(_arrays(runs[index], gen_name, _parts(group)))
            for key, variable in generator_entries(merged, gen_name):
                variable.assign(pieces[key])
                state[key] = np.asarray(variable.numpy())
    return write_model_run(out_dir, config, state, "merged_from", [
        {**source_record(run, run_dir), "groups": [g for g, i in sources.items() if i == index]}
        for index, (run, run_dir) in enumerate(zip(runs, run_dirs))])


def check_folders(run_dirs, out_dir, verb):
    """``run_dirs`` and ``out_dir`` as Paths: at least two distinct runs, and an output
    folder that is new or empty (nothing a user has is overwritten)."""
    run_dirs = [Path(r) for r in run_dirs]
    out_dir = Path(out_dir)
    if len(run_dirs) < 2:
        raise MergeError(f"give at least two runs to {verb}, got {len(run_dirs)}")
    if len(set(r.resolve() for r in run_dirs)) != len(run_dirs):
        raise MergeError("a run is named twice")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise MergeError(f"--out {str(out_dir)!r} exists and is not an empty folder: nothing "
                         "in it is touched; choose a new folder")
    return run_dirs, out_dir


def source_record(run, run_dir):
    """Provenance of one source run: its folder, checkpoint and the checkpoint's hash."""
    from tfcartoon.preset import file_sha256

    return {"run": str(Path(run_dir).resolve()), "checkpoint": str(Path(run.checkpoint).resolve()),
            "sha256": file_sha256(run.checkpoint)}


def write_model_run(out_dir, config, state, key, sources):
    """Write a generators-only run folder (config, provenance naming ``sources`` under
    ``key``, one checkpoint of ``state``) that loads like a trained run; returns it."""
    from tfcartoon.training.checkpoints import write_state
    from tfcartoon.training.run import CONFIG_FILE, PROVENANCE_FILE

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")
    record = {"data": None, "init": None, key: sources}
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(record, indent=1) + "\n",
                                           encoding="utf-8")
    write_state(out_dir, state, int(state["step"]))
    return out_dir


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tfcartoon.merge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="stage-two run directories (strict rule)")
    parser.add_argument("--out", required=True, help="new folder for the merged model")
    args = parser.parse_args(argv)
    return run_cli(lambda: merge_runs(args.runs, args.out), "merged_from", "merged model",
                   lambda s: f"{s['run']}: {', '.join(s['groups']) or '(nothing new)'}")


def run_cli(write, key, label, describe):
    """Shared end of the merge and average commands: ``write()`` the model folder (a
    refusal is one ``error:`` line and exit status 2), then one line per source run
    (``describe`` of its provenance entry under ``key``) and the folder."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from tfcartoon.training.checkpoints import CheckpointError
    from tfcartoon.training.run import TrainingError

    try:
        out = write()
    except (MergeError, TrainingError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    record = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    for source in record[key]:
        print(describe(source))
    print(f"{label}: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
