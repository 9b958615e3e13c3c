"""``favchat rl``: the RL stage (DE-GRPO or vanilla GRPO) from a stage-3 checkpoint."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rl",
        help="reinforcement learning after stage 3: DE-GRPO (paper §2.2) or vanilla GRPO",
        description=(
            "Train the policy with DE-GRPO (algorithm: de_grpo, the fine-grained facial reward, utility-"
            "weighted advantages, filter and decay, value head) or vanilla GRPO (algorithm: grpo) from a "
            "stage-3 checkpoint (model_path). The YAML config holds RLConfig's fields (favchat rl "
            "--help-config lists them with defaults, Table 6's values included); any field can be "
            "overridden after the known arguments, e.g. --num_generations 8 --learning_rate 5e-6. Runs "
            "under `accelerate launch` on many processes."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", help="YAML RL config (fields of favchat.rl.config.RLConfig)")
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="continue from a checkpoint folder, or the latest one in output_dir when no path is given")
    p.add_argument("--help-config", action="store_true", help="list every config field with its default and help")
    p.set_defaults(func=_run, accepts_overrides=True)


def _run(args: argparse.Namespace) -> int:
    import sys

    from favchat.config_io import ConfigError, load_config
    from favchat.rl.config import RLConfig, config_help

    if args.help_config:
        print(config_help())
        return 0
    if not args.config and not args.overrides:
        print("favchat rl: give --config FILE (see --help-config for the fields)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(RLConfig, args.config, args.overrides)
    except ConfigError as e:
        print(f"favchat rl: bad config: {e}", file=sys.stderr)
        return 2

    from favchat.data.manifest import ManifestError
    from favchat.rl.trainer import run

    try:
        result = run(cfg, resume=args.resume)
    except (ManifestError, FileNotFoundError, ValueError) as e:
        print(f"favchat rl: {e}", file=sys.stderr)
        return 2
    print(f"finished at step {result['step']} (round {result['round']}); last checkpoint: {result['checkpoint']}")
    return 0
