"""Train and evaluate the few-shot method against the paper's baselines; write RESULTS.md.

    python bench/compare_methods.py --data ../shared/data/fourgroups --work runs/compare \\
        --size 64 --base-steps 2000 --fewshot-steps 500 --results docs/RESULTS.md

Methods (../shared/SPEC.md, "Training"), every one through ``python -m tfcartoon.train``
and ``python -m tfcartoon.evaluate``:

- Basic: the base run (stage one, young women only), its base branch for every group;
- Baseline1: one model from scratch on all groups mixed (configs/baseline1.yaml);
- Baseline2: the base model fine-tuned whole on the new groups mixed (baseline2.yaml);
- Baseline3: the base model fine-tuned whole, one run per new group (baseline3.yaml);
  its young-women row is the base model (nothing to fine-tune);
- No selective backprop: stage two updating every variable (fewshot_full.yaml);
- Ours: stage two with the strict rule (fewshot.yaml), all new groups at once.

Stage-two runs start from the Basic run, or with ``--base preset:young_women`` from the
shipped preset (ngf 32, hourglass depth 4; any ``--size``): Basic is then the preset
itself, evaluated as the ``ours`` run's base branch (the strict rule leaves the trunk and
that branch bit-identical to the preset), and Baseline1 (from scratch) is not run unless
named in ``--methods``. ``--methods`` picks the methods (``ours`` is always run: its
discriminators judge every method). Group agreement is judged for every method
by the cartoon discriminators of the "Ours" run (they learned the groups from real
cartoons only). Each finished run is kept: rerunning the script continues where it
stopped. Grids stay in the work folder (they show the dataset's photos, which are not
ours to commit); RESULTS.md links them.
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the repository root importable
    sys.path.insert(0, str(REPO))

from tfcartoon import evaluate  # noqa: E402

CONFIGS = REPO / "configs"
NEW_GROUPS = ["young_men", "kids", "elderly"]
GROUPS = ["young_women"] + NEW_GROUPS
# evaluate's report columns, less the judge's own accuracy (printed under each table)
METRICS = tuple(c for c in evaluate.COLUMNS if c[0] != "group_agreement_real")


@dataclasses.dataclass
class Run:
    name: str            # run folder under WORK/runs
    config: str          # file in configs/
    init: str = None     # run it starts from
    base_steps: bool = False
    sets: tuple = ()


@dataclasses.dataclass
class Method:
    key: str             # name in --methods
    name: str
    runs: dict           # group -> evaluation (a run name, or "run@branch") for that group
    note: str


METHOD_KEYS = ("basic", "baseline1", "baseline2", "baseline3", "no_selective_backprop", "ours")


def plan(base=None, chosen=METHOD_KEYS):
    """(runs to train, methods to report). ``base``: a ``preset:NAME`` to start stage two
    from instead of training the Basic run."""
    chosen = set(chosen) | {"ours"}
    start = base or "basic"
    basic = "ours@young_women" if base else "basic"
    runs = [Run("basic", "base.yaml", base_steps=True),
            Run("baseline1", "baseline1.yaml", base_steps=True),
            Run("baseline2", "baseline2.yaml", init=start),
            *[Run(f"baseline3_{g}", "baseline3.yaml", init=start,
                  sets=(f"data.pool_groups=[{g}]",)) for g in NEW_GROUPS],
            Run("no_selective_backprop", "fewshot_full.yaml", init=start),
            Run("ours", "fewshot.yaml", init=start)]
    basic_note = (f"the {base} preset, base branch for all" if base
                  else "stage-one model, base branch for all")
    methods = [
        Method("basic", "Basic", {g: basic for g in GROUPS}, basic_note),
        Method("baseline1", "Baseline1", {g: "baseline1" for g in GROUPS},
               "all data mixed, one model"),
        Method("baseline2", "Baseline2", {g: "baseline2" for g in GROUPS},
               "base model fine-tuned whole on mixed new-group data"),
        Method("baseline3", "Baseline3", {"young_women": basic,
                                          **{g: f"baseline3_{g}" for g in NEW_GROUPS}},
               "base model fine-tuned whole per group (young women: the base model)"),
        Method("no_selective_backprop", "No selective backprop",
               {g: "no_selective_backprop" for g in GROUPS}, "stage two, every variable updated"),
        Method("ours", "Ours", {g: "ours" for g in GROUPS}, "stage two, strict rule (paper's)"),
    ]
    methods = [m for m in methods if m.key in chosen]
    needed = {e.split("@")[0] for m in methods for e in m.runs.values()}
    return [r for r in runs if r.name in needed], methods


def size_overrides(args, steps):
    log_every = args.log_every
    sets = [f"model.image_size={args.size}", f"data.resize={args.size * 286 // 256}",
            f"model.ngf={args.ngf}", f"model.ndf={args.ndf}",
            f"model.hourglass_depth={args.hourglass_depth}",
            f"train.steps={steps}", f"train.log_every={log_every}",
            f"train.image_every={steps}", f"train.checkpoint_every={steps // 2}",
            "train.keep_checkpoints=1", f"train.seed={args.seed}",
            "train.precision=auto"]
    if args.size < 96:  # the 7-layer global discriminator needs 96 px
        sets.append("model.global_layers=6")
    return sets


def run_complete(run_dir, steps):
    index = run_dir / "checkpoints" / "index.json"
    if not index.is_file():
        return False
    entries = json.loads(index.read_text())["checkpoints"]
    return bool(entries) and entries[-1]["step"] >= steps


def call(command, log_path):
    """Run ``command``; stream its output into ``log_path``; raise on failure."""
    print("$", shlex.join(command), flush=True)
    start = time.perf_counter()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    seconds = time.perf_counter() - start
    if code:
        raise SystemExit(f"command failed with exit code {code}; see {log_path}")
    return seconds


def load_timings(work):
    path = work / "timings.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def save_timings(work, timings):
    path = work / "timings.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(timings, indent=1))
    os.replace(tmp, path)


def train_all(args, runs, work, timings):
    for run in runs:
        steps = args.base_steps if run.base_steps else args.fewshot_steps
        run_dir = work / "runs" / run.name
        if run_complete(run_dir, steps):
            print(f"{run.name}: complete, kept", flush=True)
            continue
        command = [sys.executable, "-m", "tfcartoon.train", "--data", str(args.data),
                   "--out", str(run_dir)]
        if run_dir.exists():
            command.append("--resume")
        else:
            command += ["--config", str(CONFIGS / run.config)]
            for item in size_overrides(args, steps) + list(run.sets):
                command += ["--set", item]
            if run.init:
                init = run.init
                command += ["--init", init if init.startswith("preset:")
                            else str(work / "runs" / init)]
        timings[f"train {run.name}"] = call(command, work / "logs" / f"train_{run.name}.log")
        save_timings(work, timings)
        print(f"{run.name}: {timings[f'train {run.name}']:.0f} s", flush=True)


def evaluate_all(args, methods, work, timings):
    results = {}
    needed = {}
    for method in methods:
        for group, run in method.runs.items():
            needed.setdefault(run, []).append(group)
    for entry, groups in needed.items():
        run, _, branch = entry.partition("@")
        out = work / "eval" / entry.replace("@", "_branch_")
        report = out / "report.json"
        if not report.is_file():
            command = [sys.executable, "-m", "tfcartoon.evaluate", "--model",
                       str(work / "runs" / run), "--data", str(args.data), "--out", str(out),
                       "--judge", str(work / "runs" / "ours"), "--overwrite",
                       "--groups", *sorted(set(groups), key=GROUPS.index)]
            if branch:
                command += ["--branch", branch]
            timings[f"eval {entry}"] = call(command, work / "logs" / f"eval_{entry}.log")
            save_timings(work, timings)
        results[entry] = json.loads(report.read_text())
    return results


def photo_reference(args, work):
    """Scores of the untouched photo used as its own "cartoon": the floor any model must beat.

    The stand-in cartoons of ../shared/data/fourgroups are filtered photos, so copying
    the photo already scores well on the paired metrics; identity is 1 by definition
    and left out.
    """
    path = work / "eval" / "photo_unchanged" / "report.json"
    if path.is_file():
        return json.loads(path.read_text())
    from tfcartoon.models import face_id
    from tfcartoon.paths import shared_path

    embedder = face_id.load_face_embedder(str(shared_path("models", "face_id",
                                                          "squeezenet_fp32.tflite")))
    extract = evaluate.face_id_features(embedder)
    _, judges = evaluate.load_judge(work / "runs" / "ours")
    report = {"groups": {}}
    for index, group in enumerate(GROUPS):
        data = evaluate.load_group_data(args.data, group, args.size)
        references = [data.references[n] for n in data.names]
        scores = evaluate.paired_scores(data.photos, references)
        report["groups"][group] = {
            "identity": None, **{k: float(v.mean()) for k, v in scores.items()},
            "group_agreement": evaluate.group_votes(judges, data.photos, index)["mean"],
            "kid": evaluate.kid(extract(data.real_cartoons), extract(data.photos))}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    return report


def base_drift(args, methods, work):
    """How far each method's base-group (young_women) cartoons moved from the base model's,
    on young_women's held-out photos: rows (method, max abs, mean abs) on the [-1, 1]
    scale. The base model is the preset (``--base``) or the Basic run."""
    import numpy as np

    from tfcartoon.preset import load_preset, parse_preset_ref
    from tfcartoon.training.run import load

    group = GROUPS[0]
    photos = evaluate.load_group_data(args.data, group, args.size).photos

    def cartoons(generator, branch):
        return np.asarray(generator.group_model(branch).predict(photos, batch_size=8,
                                                                verbose=0), np.float64)

    if args.base:
        base = load_preset(parse_preset_ref(args.base), image_size=args.size).photo2cartoon
    else:
        base = load(work / "runs" / "basic").photo2cartoon
    reference = cartoons(base, group)
    rows = []
    for method in methods:
        run, _, branch = method.runs[group].partition("@")
        diff = np.abs(cartoons(load(work / "runs" / run).photo2cartoon, branch or group)
                      - reference)
        rows.append((method.name, float(diff.max()), float(diff.mean())))
    return rows


cell = evaluate.cell


def best_marks(rows, key):
    """Index of the single best value in ``rows`` for ``key`` (None: no values or a tie)."""
    values = [(r[key], i) for i, r in enumerate(rows) if r.get(key) is not None]
    if not values:
        return None
    lower_better = key in ("l1", "kid")
    best_value, best_index = (min if lower_better else max)(values)
    ties = sum(1 for value, _ in values if value == best_value)
    return best_index if ties == 1 else None  # a tie has no winner


def results_tables(methods, results, reference=None):
    lines = []
    summary = {}
    for group in GROUPS:
        lines += [f"### {group}", "",
                  "| method | run | " + " | ".join(h for _, h, _ in METRICS) + " |",
                  "|---|---|" + "---:|" * len(METRICS)]
        rows = [results[m.runs[group]]["groups"][group] for m in methods]
        best = {key: best_marks(rows, key) for key, _, _ in METRICS}
        if reference is not None:
            row = reference["groups"][group]
            lines.append("| *photo unchanged (floor)* | – | "
                         + " | ".join(cell(k, row.get(k)) for k, _, _ in METRICS) + " |")
        for i, (method, row) in enumerate(zip(methods, rows)):
            cells = []
            for key, _, _ in METRICS:
                text = cell(key, row.get(key))
                cells.append(f"**{text}**" if best[key] == i else text)
            lines.append(f"| {method.name} | `{method.runs[group]}` | " + " | ".join(cells) + " |")
            summary.setdefault(method.name, {})[group] = {k: row.get(k) for k, _, _ in METRICS}
        judge_real = rows[-1].get("group_agreement_real")
        lines += ["", f"Judge accuracy on the real reference cartoons of {group}: "
                  f"{cell('group_agreement', judge_real)}.", ""]
    return lines, summary


def mean_over_new_groups(summary):
    lines = ["| method | " + " | ".join(h for _, h, _ in METRICS) + " |",
             "|---|" + "---:|" * len(METRICS)]
    for method, groups in summary.items():
        cells = []
        for key, _, _ in METRICS:
            values = [groups[g][key] for g in NEW_GROUPS if groups[g][key] is not None]
            cells.append(cell(key, sum(values) / len(values)) if values else "n/a")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def write_results(args, methods, results, timings, wall, path):
    reference = photo_reference(args, Path(args.work))
    tables, summary = results_tables(methods, results, reference)
    script = Path(sys.argv[0])
    if script.is_absolute() and script.is_relative_to(REPO):
        script = script.relative_to(REPO)
    command = "python " + shlex.join([str(script)] + sys.argv[1:])
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    lines = ["# Results: few-shot branches against the paper's baselines", "",
             "<!-- results:begin (written by bench/compare_methods.py; the reading below is "
             "by hand) -->",
             f"Run {datetime.date.today().isoformat()} on {cpu}, {os.cpu_count()} CPUs, "
             "TensorFlow float32.", "",
             f"Command: `{command}`", "",
             f"Wall time: {wall / 60:.1f} min in all (sum of the steps below).", "",
             "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()
                                      if k not in ("results",)) + ".", "",
             "Every metric is on each group's 10 held-out photos (`<group>/val/photos`); "
             "L1/PSNR/SSIM against the paired `val/cartoons`; KID against all of the "
             "group's real cartoons (train + val) on face-ID features; group agreement "
             "by the cartoon discriminators of the `ours` run. Bold: best method per "
             "column. *Photo unchanged* scores the input photo itself as the cartoon: the "
             "stand-in cartoons are filtered photos, so it is the floor a model must beat.",
             "",
             "## Mean over the three few-shot groups", ""]
    floor = {g: {k: reference["groups"][g].get(k) for k, _, _ in METRICS} for g in GROUPS}
    lines += mean_over_new_groups({**summary, "*photo unchanged (floor)*": floor})
    lines += ["", f"## How far the {GROUPS[0]} cartoons moved from the base model", "",
              f"Max and mean absolute difference ([-1, 1] scale) between each method's "
              f"{GROUPS[0]} cartoons and the base model's ({args.base or 'the Basic run'}), "
              f"on the {GROUPS[0]} held-out photos; 0 means bit-identical.", "",
              "| method | max abs diff | mean abs diff |", "|---|---:|---:|"]
    lines += [f"| {name} | {top:.3g} | {mean:.3g} |"
              for name, top, mean in base_drift(args, methods, Path(args.work))]
    lines += ["", "## Per group", ""] + tables
    lines += ["## Methods", ""]
    lines += [f"- **{m.name}**: {m.note}." for m in methods]
    lines += ["", "## Wall time per step of the comparison", "",
              "| step | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.0f} |" for name, seconds in timings.items()]
    lines += ["", "Grids (photo | cartoon | reference, one row per held-out photo) are in "
              f"`{args.work}/eval/<run>/grids/<group>.png`; they are not committed because "
              "they show the dataset's photos.", "<!-- results:end -->", ""]
    text = "\n".join(lines)
    (Path(args.work) / "results.json").write_text(json.dumps(
        {"settings": settings, "summary": summary, "timings": timings}, indent=1))
    previous = path.read_text(encoding="utf-8") if path.exists() else ""
    if "<!-- results:end -->" in previous:
        text += previous.split("<!-- results:end -->", 1)[1].lstrip("\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/compare"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--ngf", type=int, default=32)
    parser.add_argument("--ndf", type=int, default=32)
    parser.add_argument("--hourglass-depth", type=int, default=4)
    parser.add_argument("--base-steps", type=int, default=2000)
    parser.add_argument("--fewshot-steps", type=int, default=500)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=REPO / "docs" / "RESULTS.md")
    parser.add_argument("--base", help="preset:NAME: start stage two from this preset "
                        "instead of training the Basic run")
    parser.add_argument("--methods", nargs="+", choices=METHOD_KEYS, default=None,
                        help="methods to run (default: all; with --base, all but baseline1)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    for steps in (args.base_steps, args.fewshot_steps):
        if steps % (2 * args.log_every):
            raise SystemExit(f"steps ({steps}) must be a multiple of 2 x --log-every "
                             f"({args.log_every})")
    if args.base and not args.base.startswith("preset:"):
        raise SystemExit(f"--base {args.base!r}: expected preset:NAME")
    chosen = args.methods or [k for k in METHOD_KEYS if not (args.base and k == "baseline1")]
    runs, methods = plan(args.base, chosen)
    if args.dry_run:
        print(yaml.safe_dump({"runs": [dataclasses.asdict(r) for r in runs],
                              "methods": [m.name for m in methods]}, sort_keys=False))
        return 0
    work = args.work
    (work / "logs").mkdir(parents=True, exist_ok=True)
    timings = load_timings(work)  # a rerun continues: earlier steps keep their times
    train_all(args, runs, work, timings)
    results = evaluate_all(args, methods, work, timings)
    write_results(args, methods, results, timings, sum(timings.values()), args.results)
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
