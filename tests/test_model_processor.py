"""FaVChatProcessor: sampling, face crops, chat template and labels, padding, pickling, and a clear error
for each kind of bad input. Run: python -m pytest -q tests/test_model_processor.py"""

from __future__ import annotations

import os
import pickle

import av
import numpy as np
import pytest
import torch

from favchat import FaVChatConfig, FaVChatProcessor
from favchat.data.video import VideoDecodeError, write_video
from favchat.model.processing import VideoInputs
from model_helpers import ANSWERS, QUESTIONS, frames, tiny


@pytest.fixture(scope="module")
def proc() -> FaVChatProcessor:
    return tiny()[1]


def _encode(path, n, options=None, codec="libx264"):
    c = av.open(str(path), "w", options=options or {})
    s = c.add_stream(codec, rate=10)
    s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
    c.start_encoding()
    rng = np.random.default_rng(0)
    for _ in range(n):
        for pkt in s.encode(av.VideoFrame.from_ndarray(rng.integers(0, 255, (32, 32, 3), np.uint8), format="rgb24")):
            c.mux(pkt)
    for pkt in s.encode(None):
        c.mux(pkt)
    c.close()
    return path


def test_load_video_from_file_and_array(tmp_path, proc):
    arr = frames(30, 48)
    path = write_video(tmp_path / "v.mp4", arr, fps=10)
    v = proc.load_video(path)
    assert v.general.shape == (8, 64, 64, 3) and v.face.shape == (8, 64, 64, 3)
    assert v.general.dtype == np.uint8 and v.face_source == "full_frame"
    va = proc.load_video(arr)
    assert va.general.shape == v.general.shape
    # Uniform sampling within a frame range: frames 10..19 only.
    ranged = proc.load_video(arr, frame_range=(10, 20))
    expected = proc.load_video(arr[10:20])
    assert np.array_equal(ranged.general, expected.general)


def test_face_crops_with_a_detector_and_pickling():
    from skimage.data import astronaut

    model, _ = tiny()
    proc = FaVChatProcessor.from_config(model.config, face_detector="haar")
    img = astronaut()
    vid = np.stack([np.roll(img, 3 * i, axis=1) for i in range(10)])
    v = proc.load_video(vid)
    assert v.face_source == "detector"
    full = FaVChatProcessor.from_config(model.config).load_video(vid)
    assert not np.array_equal(v.face, full.face)  # a crop, not the resized frame
    # No face anywhere: the full frame stands in, and the processor says so.
    assert proc.load_video(np.zeros((6, 64, 64, 3), np.uint8)).face_source == "full_frame"
    clone = pickle.loads(pickle.dumps(proc))
    assert np.array_equal(clone.load_video(vid).face, v.face)
    assert pickle.loads(pickle.dumps(v)).face_source == "detector"


def test_the_config_names_the_face_detector(tmp_path):
    from skimage.data import astronaut

    cfg = FaVChatConfig.from_preset("tiny", face_detector="haar")
    proc = FaVChatProcessor.from_config(cfg)
    vid = np.stack([astronaut()] * 4)
    assert proc.load_video(vid).face_source == "detector"
    assert FaVChatProcessor.from_config(cfg, face_detector="yuface").face_detector.name == "yuface"
    proc.save_pretrained(tmp_path)  # a checkpoint's processor keeps the detector
    assert FaVChatProcessor.from_pretrained(tmp_path).load_video(vid).face_source == "detector"
    assert FaVChatProcessor.from_config(FaVChatConfig.from_preset("tiny")).load_video(vid).face_source == "full_frame"
    with pytest.raises(ValueError, match="unknown face detector 'retina'"):
        FaVChatConfig.from_preset("tiny", face_detector="retina")


def test_call_builds_the_batch(proc):
    b = proc([frames(seed=0), proc.load_video(frames(seed=1))], QUESTIONS, ANSWERS)
    assert set(b) == {"input_ids", "attention_mask", "labels", "question_ids", "question_mask",
                      "general_pixel_values", "face_pixel_values"}
    assert b["general_pixel_values"].shape == (2, 8, 3, 64, 64) and b["general_pixel_values"].dtype == torch.float32
    vid = proc.video_token_id
    assert ((b["input_ids"] == vid).sum(1) == proc.num_query_tokens).all()
    # right padding with answers; labels only on the answer tokens
    assert b["attention_mask"][:, 0].all() and not b["attention_mask"][:, -1].all()
    for i in range(2):
        lab = b["labels"][i]
        text = proc.tokenizer.decode(lab[lab != -100])
        assert text.startswith(ANSWERS[i]) and "<|im_end|>" in text
        assert (lab[b["attention_mask"][i] == 0] == -100).all()
        q = proc.tokenizer.decode(b["question_ids"][i][b["question_mask"][i].bool()])
        assert q == QUESTIONS[i]
    g = proc([frames()] * 2, QUESTIONS)
    assert "labels" not in g and g["attention_mask"][:, -1].all() and not g["attention_mask"][:, 0].all()
    text = proc.tokenizer.decode(g["input_ids"][1][g["attention_mask"][1].bool()])
    assert text.endswith("<|im_start|>assistant\n")


def test_history_goes_before_the_question(proc):
    b = proc([frames()], ["And now?"], ["Sad."], history=[[("How does she feel?", "Happy.")]])
    text = proc.tokenizer.decode(b["input_ids"][0])
    assert text.index("<video>") < text.index("How does she feel?") < text.index("Happy.") < text.index("And now?")
    assert proc.tokenizer.decode(b["labels"][0][b["labels"][0] != -100]).startswith("Sad.")


def test_save_load(tmp_path, proc):
    proc.save_pretrained(tmp_path)
    again = FaVChatProcessor.from_pretrained(tmp_path)
    b1, b2 = proc([frames()], QUESTIONS[:1], ANSWERS[:1]), again([frames()], QUESTIONS[:1], ANSWERS[:1])
    for k in b1:
        assert torch.equal(b1[k], b2[k]), k


def test_a_demo_style_checkpoint_loads_through_the_auto_classes(tmp_path):
    """A checkpoint as favchat demo writes it (the demo recipe's model: the EfficientNet-Lite0 facial encoder, 16
    video slots, no system message, the recipe's phrase table beside the weights) loads with transformers'
    AutoProcessor and AutoModel / AutoModelForImageTextToText and answers as the objects that saved it."""
    import yaml
    from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

    from favchat import FaVChatConfig, FaVChatForConditionalGeneration
    from favchat.configs import __file__ as configs
    from favchat.recipes.tiny_demo.phrase_table import PhraseTable

    recipe = yaml.safe_load(open(os.path.join(os.path.dirname(configs), "demo.yaml")))
    model_cfg = recipe["face_pretrain"]["model"]
    cfg = FaVChatConfig.from_preset(model_cfg["preset"], **model_cfg["overrides"])
    torch.manual_seed(0)
    model = FaVChatForConditionalGeneration.from_parts(cfg).eval()
    proc = FaVChatProcessor.from_config(cfg)
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    PhraseTable(cfg.text_config.hidden_size, proc.tokenizer).save(tmp_path)

    auto_proc = AutoProcessor.from_pretrained(tmp_path)
    assert type(auto_proc) is FaVChatProcessor and auto_proc.settings() == proc.settings()
    b1 = proc([frames()], QUESTIONS[:1], ANSWERS[:1])
    b2 = auto_proc([frames()], QUESTIONS[:1], ANSWERS[:1])
    assert b1.keys() == b2.keys() and all(torch.equal(b1[k], b2[k]) for k in b1)
    for auto in (AutoModel, AutoModelForImageTextToText):
        loaded = auto.from_pretrained(tmp_path).eval()
        assert type(loaded) is FaVChatForConditionalGeneration
        with torch.no_grad():
            torch.testing.assert_close(loaded(**b2).logits, model(**b1).logits, rtol=0, atol=0)


# ---------------------------------------------------------------- bad input, one test each
def test_missing_path(tmp_path, proc):
    with pytest.raises(VideoDecodeError, match="no such file"):
        proc.load_video(tmp_path / "nope.mp4")


def test_zero_byte_file(tmp_path, proc):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty file"):
        proc.load_video(p)


def test_text_file_named_mp4(tmp_path, proc):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoDecodeError, match="notes.mp4: not a readable video container"):
        proc.load_video(p)


def test_truncated_mp4(tmp_path, proc):
    # faststart puts the index first, so the cut file opens and says it has 40 frames
    p = _encode(tmp_path / "full.mp4", 40, {"movflags": "faststart"})
    data = p.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoDecodeError, match="cut.mp4: frames .* could not be decoded .*truncated"):
        proc.load_video(cut)
    # without faststart the index is at the end and the cut file has no readable stream at all
    plain = write_video(tmp_path / "plain.mp4", frames(20, 32))
    cut2 = tmp_path / "cut2.mp4"
    cut2.write_bytes(plain.read_bytes()[:2000])
    with pytest.raises(VideoDecodeError, match="cut2.mp4"):
        proc.load_video(cut2)


def test_video_with_no_frames(tmp_path, proc):
    p = _encode(tmp_path / "noframes.avi", 0, codec="mpeg4")
    with pytest.raises(VideoDecodeError, match="no decodable frames"):
        proc.load_video(p)
    with pytest.raises(ValueError, match="empty"):
        proc.load_video(np.zeros((0, 32, 32, 3), np.uint8))


def test_prompt_without_placeholder(proc):
    with pytest.raises(ValueError, match="exactly once, found 0"):
        proc.tokenize_prompt("<|im_start|>user\nWhat is she doing?<|im_end|>\n")
    with pytest.raises(ValueError, match="must not contain the video placeholder"):
        proc([frames()], ["<video> twice?"])


def test_frames_wrong_dtype(proc):
    with pytest.raises(ValueError, match="dtype uint8"):
        proc.load_video(frames().astype(np.float32))


def test_frames_wrong_shape(proc):
    with pytest.raises(ValueError, match=r"shape \(T, H, W, 3\)"):
        proc.load_video(frames()[..., 0])  # grey (T, H, W)
    with pytest.raises(ValueError, match=r"shape \(T, H, W, 3\)"):
        proc.load_video(frames()[0])  # one image (H, W, 3)
    bad = VideoInputs(general=np.zeros((8, 16, 16, 3), np.uint8), face=np.zeros((8, 64, 64, 3), np.uint8),
                      face_source="full_frame")
    with pytest.raises(ValueError, match="must be 64x64"):
        proc([bad], ["Hi?"])
    with pytest.raises(TypeError, match="file path or a uint8 array"):
        proc.load_video([[0]])


def test_model_rejects_wrong_pixel_shapes():
    model, proc = tiny()
    b = proc([frames()], QUESTIONS[:1])
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        model(**(dict(b) | {"general_pixel_values": b["general_pixel_values"][0]}))
    with pytest.raises(ValueError, match="frames must be 64x64"):
        model(**(dict(b) | {"face_pixel_values": torch.zeros(1, 8, 3, 16, 16)}))
