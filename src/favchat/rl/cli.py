"""``favchat rl``: the RL stage (DE-GRPO or vanilla GRPO) from a stage-3 checkpoint."""

from __future__ import annotations

from favchat.cli import CommandError
from favchat.rl.config import RLConfig


def rl(config: RLConfig, resume: str | None = None) -> int:
    """Reinforcement learning after stage 3: DE-GRPO (paper §2.2) or vanilla GRPO.

    DE-GRPO (algorithm de_grpo): the fine-grained facial reward, utility-weighted advantages, filter and decay,
    a value head; vanilla GRPO (algorithm grpo) from the same trainer. Defaults are Table 6's values. Runs under
    ``accelerate launch`` on many processes.

    Args:
        resume: A checkpoint folder to continue from, or "latest" for the newest one in output_dir.
    """
    from favchat.data.manifest import ManifestError
    from favchat.rl.trainer import run

    try:
        result = run(config, resume=resume)
    except (ManifestError, FileNotFoundError, ValueError) as e:
        raise CommandError(e) from e
    print(f"finished at step {result['step']} (round {result['round']}); last checkpoint: {result['checkpoint']}")
    return 0
