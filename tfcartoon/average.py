"""Average the generators of runs fine-tuned one from another (weight interpolation).

    python -m tfcartoon.average runs/preset-sharpen2 runs/preset-sharpen3 \\
        --weights 0.3 0.7 --out runs/preset-average

Runs that continue one another (``--init`` chains of one model, such as the preset's
phases) stay in one basin of the loss, and a weighted mean of their weights is a model
too, often one that sits between their figures (for the preset: PSNR of one, crisp lines
of the other). Every variable of both generators is averaged with the given weights,
which must be positive and add up to 1. The output folder reads like a run (generators
only, like ``python -m tfcartoon.merge``'s): ``cartoonize``, ``evaluate``,
``bench/bench_preset.py``, ``python -m tfcartoon.preset`` and the export scripts take it
as ``--model``. Its config is the last run's; its ``provenance.json`` names the runs,
their checkpoints' hashes and the weights.

Refused: runs of different groups or model shapes (the first variables that differ are
named), weights that do not match the runs or do not add up to 1, and an output folder
that is not new or empty.
"""

import argparse
import sys

from tfcartoon.merge import (GENERATORS, MergeError, _arrays, _named, check_folders,
                             run_cli, source_record, write_model_run)


def _weights(weights, count):
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise MergeError(f"--weights has {len(weights)} values for {count} runs; give one "
                         "per run, in the same order")
    if any(not w > 0 for w in weights):
        raise MergeError(f"--weights {weights}: each must be > 0")
    if abs(sum(weights) - 1.0) > 1e-6:
        raise MergeError(f"--weights {weights} add up to {sum(weights):g}; they must add up "
                         "to 1")
    return weights


def average_runs(run_dirs, out_dir, weights=None):
    """Write the weighted mean of the runs' generators into the new folder ``out_dir``."""
    import numpy as np

    from tfcartoon.training.checkpoints import FORMAT
    from tfcartoon.training.run import load

    weights = _weights(weights, len(run_dirs))
    run_dirs, out_dir = check_folders(run_dirs, out_dir, "average")
    runs = [load(r) for r in run_dirs]
    first = runs[0].config
    for run, run_dir in zip(runs[1:], run_dirs[1:]):
        if run.config.groups != first.groups:
            raise MergeError(f"{run_dir} has groups {run.config.groups}, {run_dirs[0]} has "
                             f"{first.groups}: only runs of the same model can be averaged")
    state = {"step": np.asarray(runs[-1].step, np.int64), "format": np.asarray(FORMAT, np.int64)}
    for gen_name in GENERATORS:
        parts = [_arrays(run, gen_name, None) for run in runs]
        for other, run_dir in zip(parts[1:], run_dirs[1:]):
            differ = sorted(k for k in parts[0].keys() | other.keys()
                            if k not in parts[0] or k not in other
                            or parts[0][k].shape != other[k].shape)
            if differ:
                raise MergeError(f"{run_dir} and {run_dirs[0]} are different models: "
                                 f"{_named(differ)}")
        for key in parts[0]:
            mean = sum(w * p[key].astype(np.float64) for w, p in zip(weights, parts))
            state[key] = mean.astype(parts[-1][key].dtype)
    return write_model_run(out_dir, runs[-1].config, state, "averaged_from", [
        {**source_record(run, run_dir), "weight": w}
        for run, run_dir, w in zip(runs, run_dirs, weights)])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tfcartoon.average", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories of one model")
    parser.add_argument("--weights", nargs="+", type=float,
                        help="one weight per run, > 0, adding up to 1 (default: equal)")
    parser.add_argument("--out", required=True, help="new folder for the averaged model")
    args = parser.parse_args(argv)
    return run_cli(lambda: average_runs(args.runs, args.out, args.weights), "averaged_from",
                   "averaged model",
                   lambda s: f"{s['weight']:g} x {s['run']} ({s['checkpoint']})")

if __name__ == "__main__":
    sys.exit(main())
