"""`favchat rl` argument handling and the RL pool built from manifest clips."""

from __future__ import annotations

import yaml

from favchat.cli import main
from favchat.data.manifest import QA, Clip
from favchat.rl.data import DEFAULT_QUESTION, samples_from_clips


def test_help_lists_table6_defaults(capsys):
    assert main(["rl", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--tau_low TAU_LOW τ_low: a sample with h < τ_low leaves the pool (Eq. 12). (type: float, default: 0.2)" in out
    assert "--beta_kl BETA_KL" in out and "(type: float, default: 0.01)" in out


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    cfg = tmp_path / "rl.yaml"
    cfg.write_text(yaml.safe_dump({"algorithm": "ppo"}))
    assert main(["rl", "--config", str(cfg)]) == 2
    assert "algorithm must be one of" in capsys.readouterr().err
    cfg.write_text(yaml.safe_dump({"algorithm": "grpo", "output_dir": str(tmp_path / "o")}))
    assert main(["rl", "--config", str(cfg)]) == 2  # no model_path checkpoint needed for preset, but no data
    assert "train_manifest" in capsys.readouterr().err


def test_samples_from_clips_narrow_questions_to_their_answer():
    labels = {"appearance": ["brown_hair", "no_beard"], "action": ["nod"], "emotion": ["happy"]}
    clip = Clip(id="a", video="a.mp4", labels=labels, qa=[
        QA("What colour is the hair?", "The person has brown hair.", "attribute"),
        QA("Does the person nod?", "Yes.", "yesno"),
        QA("What emotion?", "Nothing I can name.", "emotion"),
        QA("Describe the person.", "Brown hair.", "description"),
    ])
    s = samples_from_clips([clip, Clip(id="b", video="b.mp4", labels=labels)])
    assert [x.labels for x in s[:3]] == [
        {"appearance": ["brown_hair"], "action": [], "emotion": []},
        {"appearance": [], "action": [], "emotion": ["happy"]},  # answer names none: all of the group
        labels,
    ]
    assert s[3].question == DEFAULT_QUESTION and s[3].labels == labels
