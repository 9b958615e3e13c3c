"""DE-GRPO and vanilla GRPO (paper §2.2, App. D; docs/design.md §3): rewards, equations, trainer, CLI.

Heavy parts (the trainer, the embedding reward model) import on first use; see docs/de_grpo.md.
"""

from favchat.rl.config import RLConfig
from favchat.rl.rewards import facial_reward, format_length_reward, make_group_reward

__all__ = ["RLConfig", "facial_reward", "format_length_reward", "make_group_reward"]
