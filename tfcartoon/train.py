"""Command line: train the base stage or a few-shot stage.

    python -m tfcartoon.train --stage base --config configs/base.yaml \\
        --data ../shared/data/p2c/train --out runs/base
    python -m tfcartoon.train --stage fewshot --group elderly --config configs/fewshot.yaml \\
        --data ../shared/data/fourgroups --init runs/base --out runs/elderly

Any config key can be overridden: ``--set train.steps=2000 --set loss.cycle=20``.
"""

import argparse
import logging
import sys

from tfcartoon.config import ConfigError, load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tfcartoon.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["base", "fewshot"], help="training stage")
    parser.add_argument("--group", help="few-shot group to train (default: all new groups)")
    parser.add_argument("--config", help="YAML config (default: built-in reference settings)")
    parser.add_argument("--data", required=True, help="dataset folder (see README: layout)")
    parser.add_argument("--out", required=True, help="run directory to create (or resume)")
    parser.add_argument("--init", help="base run directory, or preset:NAME (e.g. "
                        "preset:young_women), that the fewshot stage starts from (with --stage "
                        "base: fine-tune its trunk and base branch; its image size may differ)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint, with the "
                             "config.yaml it saved: --config, --set, --stage, --group and "
                             "--init are refused with it")
    parser.add_argument("--allow-other-data", action="store_true",
                        help="with --resume: continue on a --data folder other than the one "
                             "the run recorded")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved config and dataset counts, then exit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. train.steps=500 (repeatable)")
    parser.add_argument("--devices", nargs="+",
                        help="train on these devices with MirroredStrategy (e.g. /gpu:0 /gpu:1)")
    return parser.parse_args(argv)


def resolved_config(args):
    """The config of a new run: file, --set overrides, --stage and --group.

    A few-shot ``--group`` that the config does not list (a new group, e.g.
    ``--group firefighters`` with a folder of that name) is appended to ``groups``: its
    branch starts as a copy of the base branch, like every few-shot group's.
    """
    overrides = list(args.set)
    if args.stage:
        overrides.append(f"train.stage={args.stage}")
    config = load_config(args.config, overrides)
    if args.group:
        if args.group not in config.groups and config.train.stage == "fewshot":
            from tfcartoon.models.generator import validate_groups

            try:
                groups = validate_groups([*config.groups, args.group])
            except ValueError as error:
                raise ConfigError(f"--group: {error}") from None
            overrides.append(f"groups=[{', '.join(groups)}]")
        overrides.append(f"train.group={args.group}")
        config = load_config(args.config, overrides)
    return config


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from tfcartoon.data.dataset import DatasetError
    from tfcartoon.preset import PresetError
    from tfcartoon.training.checkpoints import CheckpointError
    from tfcartoon.training.run import (
        TrainingError, check_resume_data, plan_summary, read_run_config, resolve_face_id, stage_files, train)

    try:
        if args.resume and (args.config or args.set or args.stage or args.group or args.init):
            raise ConfigError("--resume continues a run with its saved config.yaml; do not "
                              "pass --config, --set, --stage, --group or --init with it")
        config = read_run_config(args.out) if args.resume else resolved_config(args)
        if args.dry_run:
            if args.resume:
                check_resume_data(args.out, args.data, args.allow_other_data)
            config, _ = resolve_face_id(config)
            print(config.to_yaml(), end="")
            files = stage_files(config, args.data)
            print("\n".join(plan_summary(config, files)))
            return 0
        run_dir = train(config, args.data, args.out, init=args.init, resume=args.resume,
                        devices=args.devices, allow_other_data=args.allow_other_data)
    except (ConfigError, DatasetError, TrainingError, CheckpointError, PresetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
