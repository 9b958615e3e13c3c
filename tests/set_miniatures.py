"""Miniature copies of the real data sets in the layouts their authors distribute (docs/datasets.md): the real
file and folder names, field names, class orders and label encodings, with a handful of tiny clips (noise
videos, or frame folders of JPEGs) instead of thousands. Where two sources disagree, a writer takes the
variant as a parameter."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from favchat.data.video import write_video

# CelebV-HQ's label names (appearance 40, action 35), in celebvhq_info.json's order.
CELEBV_APPEARANCE = [
    "blurry", "male", "young", "chubby", "pale_skin", "rosy_cheeks", "oval_face", "receding_hairline", "bald",
    "bangs", "black_hair", "blonde_hair", "gray_hair", "brown_hair", "straight_hair", "wavy_hair", "long_hair",
    "arched_eyebrows", "bushy_eyebrows", "bags_under_eyes", "eyeglasses", "sunglasses", "narrow_eyes", "big_nose",
    "pointy_nose", "high_cheekbones", "big_lips", "double_chin", "no_beard", "5_o_clock_shadow", "goatee", "mustache",
    "sideburns", "heavy_makeup", "wearing_earrings", "wearing_hat", "wearing_lipstick", "wearing_necklace",
    "wearing_necktie", "wearing_mask"]
CELEBV_ACTION = [
    "blow", "chew", "close_eyes", "cough", "cry", "drink", "eat", "frown", "gaze", "glare", "head_wagging", "kiss",
    "laugh", "listen_to_music", "look_around", "make_a_face", "nod", "play_instrument", "read", "shake_head", "shout",
    "sigh", "sing", "sleep", "smile", "smoke", "sneer", "sneeze", "sniff", "talk", "turn", "weep", "whisper", "wink",
    "yawn"]
DFEW_NAMES = ["Happy", "Sad", "Neutral", "Angry", "Surprise", "Disgust", "Fear"]  # labels 1..7
MAFW_NAMES = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise", "contempt", "anxiety",
              "helplessness", "disappointment"]


def noise_frames(n: int = 8, size: int = 32, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8: a random texture sliding sideways."""
    base = np.random.default_rng(seed).integers(0, 256, (size, size + n, 3), dtype=np.uint8)
    return np.stack([base[:, i:i + size] for i in range(n)])


def tiny_video(path: Path, seed: int = 0, n: int = 8, fps: float = 8.0) -> Path:
    return write_video(path, noise_frames(n, seed=seed), fps=fps)


def frame_folder(folder: Path, names: list[str], seed: int = 0, size: int = 32) -> Path:
    """JPEG frames named ``names`` (in frame order); frame k is noise brightened by 8k, so the order can be read back."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k, name in enumerate(names):
        img = np.clip(rng.integers(0, 64, (size, size, 3)) + 8 * k, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / name), img)
    return folder


def write_dfew(root: Path, test_dir: str = "test(single-labeled)", per_fold: int = 1) -> dict[int, list[tuple[str, int]]]:
    """DFEW: ``Clip/original/NNNNN.mp4``, ``Clip/clip_224x224/NNNNN/`` frames, ``EmoLabel_DataSplit/{train,test}
    (single-labeled)/set_{1..5}.csv`` (``video_name,label``, unpadded numbers, labels 1..7). Returns fold -> test rows."""
    folds: dict[int, list[tuple[str, int]]] = {}
    clip = 1
    for fold in range(1, 6):
        rows = []
        for _ in range(per_fold):
            label = (clip % 7) + 1
            tiny_video(root / "Clip" / "original" / f"{clip:05d}.mp4", seed=clip)
            frame_folder(root / "Clip" / "clip_224x224" / f"{clip:05d}",
                         [f"{clip:05d}_{k:05d}.jpg" for k in range(1, 5)], seed=clip)
            rows.append((str(clip), label))
            clip += 1
        folds[fold] = rows
    split = root / "EmoLabel_DataSplit"
    for fold, rows in folds.items():
        train = [r for f, rs in folds.items() if f != fold for r in rs]
        for name, part in ((test_dir, rows), (test_dir.replace("test", "train"), train)):
            (split / name).mkdir(parents=True, exist_ok=True)
            with open(split / name / f"set_{fold}.csv", "w", newline="") as f:
                csv.writer(f).writerows([("video_name", "label"), *part])
    return folds


def write_mafw(root: Path, split_root: str = "split/single/no_caption", per_fold: int = 2) -> dict[int, list[tuple[str, str]]]:
    """MAFW: ``clips/NNNNN.mp4``, ``MAFW/Labels/single_label.txt`` (clip, label, zh and en captions) and
    ``<split_root>/set_{1..5}/{train,test}.txt`` lines ``<clip>.mp4 <label>``. Returns fold -> test rows."""
    folds: dict[int, list[tuple[str, str]]] = {}
    labels = []
    clip = 1
    for fold in range(1, 6):
        rows = []
        for _ in range(per_fold):
            name, label = f"{clip:05d}.mp4", MAFW_NAMES[clip % len(MAFW_NAMES)]
            tiny_video(root / "clips" / name, seed=100 + clip)
            rows.append((name, label))
            labels.append(f"{name}  {label}  一个人在说话。  A person is talking.\n")
            clip += 1
        folds[fold] = rows
    (root / "Labels").mkdir(parents=True)
    (root / "Labels" / "single_label.txt").write_text("".join(labels), encoding="utf-8")
    for fold, rows in folds.items():
        d = root / split_root / f"set_{fold}"
        d.mkdir(parents=True)
        train = [r for f, rs in folds.items() if f != fold for r in rs]
        (d / "test.txt").write_text("".join(f"{n} {lab}\n" for n, lab in rows))
        (d / "train.txt").write_text("".join(f"{n} {lab}\n" for n, lab in train))
    return folds


def write_dfec(root: Path) -> list[dict]:
    """DFEC: ``test.json``, a JSON array of ``{"id", "video", "caption"}`` whose videos sit in the source sets."""
    items = []
    for k, video in enumerate(["DFEW/videos/2961.mp4", "MAFW/clips/00417.mp4", "CAER/test/Anger/0001.avi"]):
        if video.endswith(".mp4"):
            tiny_video(root / video, seed=200 + k)
        else:
            path = root / video  # an avi written by the same encoder, as CAER ships avi files
            path.parent.mkdir(parents=True, exist_ok=True)
            tiny_video(path.with_suffix(".mp4"), seed=200 + k).rename(path)
        items.append({"id": k, "video": video, "caption": f"A young woman with black hair smiles and nods {k + 1} times."})
    (root / "test.json").write_text(json.dumps(items, indent=1))
    return items


def write_emer(root: Path) -> dict[str, Path]:
    """EMER: ``dataset-v1/gt-eng.csv`` (names,emotions,subtitles,reasons), ``dataset-v2/final-EMER-reason.csv``
    (name,chinese,english) and MER2023's clips in ``video/``."""
    names = ["sample_00000021", "sample_00000667"]
    for k, n in enumerate(names):
        tiny_video(root / "video" / f"{n}.mp4", seed=300 + k)
    v1, v2 = root / "dataset-v1" / "gt-eng.csv", root / "dataset-v2" / "final-EMER-reason.csv"
    v1.parent.mkdir(parents=True)
    v2.parent.mkdir(parents=True)
    with open(v1, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("names", "emotions", "subtitles", "reasons"),
                                 (names[0], "happy", "That's wonderful!", "She smiles widely, so she is happy."),
                                 (names[1], "angry", "Get out.", "He frowns and shouts: he is angry.")])
    with open(v2, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("name", "chinese", "english"),
                                 (names[0], "她在微笑。", "In the video, she smiles; she is happy."),
                                 (names[1], "他皱眉。", "In the video, he frowns and raises his voice; angry.")])
    return {"v1": v1, "v2": v2, "videos": root / "video"}


def write_ytf(root: Path, people: int = 3) -> list[tuple[int, int, str, str, int]]:
    """YouTube Faces: ``frame_images_DB/<person>/<n>/<n>.<frame>.jpg`` (frame numbers crossing a digit boundary),
    ``aligned_images_DB/<person>/<n>/aligned_detect_<n>.<frame>.jpg``, ``<person>.labeled_faces.txt``,
    ``meta_data/meta_and_splits.mat`` and ``splits.txt``. Returns the pair rows (split, pair, first, second, same)."""
    from scipy.io import savemat

    names = []
    for p in range(people):
        person = f"Person_{chr(65 + p)}"
        for n in (0, 1):
            frames = [f"{n}.{k}.jpg" for k in (998, 999, 1000, 1001)]
            frame_folder(root / "frame_images_DB" / person / str(n), frames, seed=10 * p + n)
            frame_folder(root / "aligned_images_DB" / person / str(n), [f"aligned_detect_{f}" for f in frames],
                         seed=10 * p + n)
            names.append(f"{person}/{n}")
        (root / "frame_images_DB" / f"{person}.labeled_faces.txt").write_text(
            "".join(f"{person}\\0\\0.{k}.jpg,0,16,16,20,20,0.0,1\n" for k in (998, 999)))
    rows = []
    for split in (1, 2):
        for p in range(people):
            same = (split + p) % 2
            a, b = names[2 * p], names[2 * p + 1] if same else names[(2 * p + 2) % len(names)]
            rows.append((split, len(rows) + 1, a, b, same))
    (root / "splits.txt").write_text("split number, pair id, first name, second name, is physically the same, is the same\n"
                                     + "".join(f"{s}, {k}, {a}, {b}, {y}, {y}\n" for s, k, a, b, y in rows))
    splits = np.zeros((people, 3, 2))
    for s, k, a, b, y in rows:
        splits[(k - 1) % people, :, s - 1] = (names.index(a) + 1, names.index(b) + 1, y)
    (root / "meta_data").mkdir(parents=True)
    savemat(root / "meta_data" / "meta_and_splits.mat",
            {"video_names": np.array(names, dtype=object).reshape(-1, 1),
             "mat_names": np.array([f"{n}.mat" for n in names], dtype=object).reshape(-1, 1),
             "video_labels": np.repeat(np.arange(1, people + 1), 2)[None].astype(float), "Splits": splits})
    return rows


def write_celebv(root: Path, readme_casing: bool = False) -> dict:
    """CelebV-HQ: ``celebvhq_info.json`` (meta_info mappings, clips with duration, bbox, 0/1 attribute lists and both
    emotion forms) and ``videos/``: processed ``<clip id>.mp4`` clips, one raw ``<ytb_id>.mp4`` download for two
    clips, and one clip whose video is missing. ``readme_casing``: mapping names as the README shows them ("Blurry")."""
    appearance = [n.capitalize() if readme_casing else n for n in CELEBV_APPEARANCE]

    def flags(names: list[str], on: set[str]) -> list[int]:
        return [int(n in on) for n in names]

    clips = {
        "M2Ohb0FAaJU_1": ("M2Ohb0FAaJU", (81.62, 86.17), {"male", "black_hair", "5_o_clock_shadow"}, {"talk", "nod"},
                          {"sep_flag": False, "labels": "neutral"}),
        "_0tf2n3rlJU_0": ("_0tf2n3rlJU", (52.72, 56.1), {"blonde_hair", "young", "wearing_lipstick"}, {"smile", "sigh"},
                          {"sep_flag": True, "labels": [{"emotion": "neutral", "start_sec": 0, "end_sec": 0.28},
                                                        {"emotion": "happy", "start_sec": 1.28, "end_sec": 3.28}]}),
        "kd1BQaIh8Rc_3": ("kd1BQaIh8Rc", (1.0, 2.5), {"gray_hair", "eyeglasses"}, {"frown"},
                          {"sep_flag": False, "labels": "sadness"}),
        "kd1BQaIh8Rc_4": ("kd1BQaIh8Rc", (3.0, 4.0), {"gray_hair"}, {"close_eyes"},
                          {"sep_flag": False, "labels": "contempt"}),
        "zzMissing00_0": ("zzMissing00", (0.0, 1.0), {"male"}, {"talk"}, {"sep_flag": False, "labels": "anger"}),
    }
    info = {"meta_info": {"appearance_mapping": appearance, "action_mapping": CELEBV_ACTION}, "clips": {
        cid: {"ytb_id": ytb, "duration": {"start_sec": s, "end_sec": e},
              "bbox": {"top": 0.1, "bottom": 0.8, "left": 0.25, "right": 0.75},
              "attributes": {"appearance": flags(CELEBV_APPEARANCE, app), "action": flags(CELEBV_ACTION, act),
                             "emotion": emo}, "version": "v0.1"}
        for cid, (ytb, (s, e), app, act, emo) in clips.items()}}
    path = root / "celebvhq_info.json"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info))
    videos = root / "videos"
    tiny_video(videos / "M2Ohb0FAaJU_1.mp4", seed=1, n=36, fps=8.0)  # processed: 4.55 s at ~8 fps
    tiny_video(videos / "_0tf2n3rlJU_0.mp4", seed=2, n=27, fps=8.0)  # 3.38 s
    tiny_video(videos / "kd1BQaIh8Rc.mp4", seed=3, n=40, fps=8.0)  # the raw download of two clips
    return {"info": path, "videos": videos, "clips": clips}
