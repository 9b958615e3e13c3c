"""The tiny preset's tokenizer: a byte-level BPE trained in code, deterministically, on a built-in corpus.

Why not SmolLM2's tokenizer for the tiny preset: loading it means parsing the 90 MB gguf (seconds), and
its 49k-row vocabulary would dominate a model meant to build in milliseconds. A byte-level BPE still
encodes any text (unknown words fall back to bytes), and training it on the taxonomy's phrases and the
question templates makes the words the tiny model sees short token sequences. The chat template is
ChatML, the template of SmolLM2 and Qwen, so prompts look the same at every scale.
"""

from __future__ import annotations

from functools import lru_cache

from transformers import PreTrainedTokenizerFast

# Special tokens come first so their ids are fixed: 0 pad/eos-of-text, 1-2 ChatML, 3 the video placeholder.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<video>")
TINY_VOCAB_SIZE = 1024

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_QUESTIONS = (
    "Describe the person's face in the video.", "What is the emotion of the person?",
    "What does the person do in the video?", "Does the person wear glasses?", "What colour is the hair?",
    "Is the person smiling or frowning?", "Describe the facial expression and how it changes over time.",
    "How many times does the person blink?", "Does the person nod or shake the head?",
    "Summarise the video in detail.", "What accessories does the person wear?", "Is the person talking?",
    "Yes.", "No.", "The person", "In the video, a man", "In the video, a woman", "with short hair",
    "with long hair", "looks happy and then surprised.", "appears calm, then turns the head to the left.",
)


def _corpus() -> list[str]:
    from favchat.data.taxonomy import LABELS

    lines = list(_QUESTIONS)
    for label in LABELS:
        lines.append(label.phrase)
        lines.extend(label.synonyms)
        lines.append(f"The person {label.phrase}.")
    return lines


@lru_cache(maxsize=1)
def _tiny_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok.to_str()


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh tokenizer object (the trained JSON is cached, so this takes milliseconds)."""
    from tokenizers import Tokenizer

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tiny_tokenizer_json()),
        bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        additional_special_tokens=["<|im_start|>", "<video>"],
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok
