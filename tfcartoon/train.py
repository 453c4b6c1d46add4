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
from tfcartoon.data.dataset import DatasetError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tfcartoon.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["base", "fewshot"], help="training stage")
    parser.add_argument("--group", help="few-shot group to train (default: all new groups)")
    parser.add_argument("--config", help="YAML config (default: built-in reference settings)")
    parser.add_argument("--data", required=True, help="dataset folder (see README: layout)")
    parser.add_argument("--out", required=True, help="run directory to create (or resume)")
    parser.add_argument("--init", help="base run directory the fewshot stage starts from "
                        "(with --stage base: fine-tune that run's trunk and base branch)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved config and dataset counts, then exit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. train.steps=500 (repeatable)")
    parser.add_argument("--devices", nargs="+",
                        help="train on these devices with MirroredStrategy (e.g. /gpu:0 /gpu:1)")
    return parser.parse_args(argv)


def resolved_config(args):
    overrides = list(args.set)
    if args.stage:
        overrides.append(f"train.stage={args.stage}")
    if args.group:
        overrides.append(f"train.group={args.group}")
    return load_config(args.config, overrides)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from tfcartoon.training.run import (
        TrainingError, plan_summary, resolve_face_id, stage_files, train)

    try:
        if args.resume and (args.config or args.set or args.stage or args.group):
            raise ConfigError("--resume continues a run with its saved config.yaml; do not "
                              "pass --config, --set, --stage or --group with it")
        config = None if args.resume else resolved_config(args)
        if args.dry_run:
            config, _ = resolve_face_id(config)
            print(config.to_yaml(), end="")
            files = stage_files(config, args.data)
            print("\n".join(plan_summary(config, files)))
            return 0
        run_dir = train(config, args.data, args.out, init=args.init, resume=args.resume,
                        devices=args.devices)
    except (ConfigError, DatasetError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
