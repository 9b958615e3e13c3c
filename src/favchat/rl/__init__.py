"""DE-GRPO and vanilla GRPO (paper §2.2, App. D; docs/design.md §3): rewards (``favchat.rl.rewards``),
equations (``favchat.rl.de_grpo``), the trainer (``favchat.rl.trainer``) and its config (``favchat.rl.config``);
see docs/de_grpo.md. Nothing is imported here, so reading the config imports no torch.
"""
