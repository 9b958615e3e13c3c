"""`favchat chat` shows whole sentences: a sentence that max_new_tokens cuts off is not shown."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from favchat.serve.chat import ChatSession, last_sentence_end

EOS = 0


class WordTokenizer:
    """Token k is the k-th word (token 0 the end of the answer, a special token)."""

    def __init__(self, words: list[str]):
        self.words = ["<eos>"] + words

    def decode(self, ids, skip_special_tokens: bool = True, **kwargs) -> str:
        return " ".join(self.words[i] for i in ids if not (skip_special_tokens and i == EOS))


def session_answering(answer: str, stops: bool) -> ChatSession:
    """A chat session whose model says ``answer`` word by word, then ends it (``stops``) or runs on."""
    words = answer.split()
    tokenizer = WordTokenizer(words)

    def generate(max_new_tokens: int, streamer, **kwargs) -> torch.Tensor:
        ids = list(range(1, len(words) + 1)) + ([EOS] if stops else [len(words)] * max_new_tokens)
        ids = ids[:max_new_tokens]
        for token in ids:
            streamer.put(torch.tensor([token]))
        streamer.end()
        return torch.tensor([ids])  # (1, L)

    session = ChatSession.__new__(ChatSession)
    session.processor = type("Processor", (), {"tokenizer": tokenizer, "__call__": lambda self, **kw: {}})()
    session.model = SimpleNamespace(generate=generate,
                                    language_model=SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=EOS)))
    session.device, session.features, session.video, session.history = torch.device("cpu"), None, None, []
    return session


@pytest.mark.parametrize("answer, stops, limit, shown", [
    # cut off mid-sentence: the finished sentences only
    ("The person has blond hair. The person first closes the eyes and finally", False, 12,
     ["The person has blond hair."]),
    # the answer ended on its own: all of it, a sentence at a time
    ("The person has blond hair. She smiles.", True, 40, ["The person has blond hair.", " She smiles."]),
    # ended without a full stop: shown as it is
    ("blond hair", True, 40, ["blond hair"]),
    # cut exactly at a sentence's end: that sentence is whole
    ("The person has blond hair.", False, 5, ["The person has blond hair."]),
    # cut before any sentence ended: what there is, marked as cut
    ("The person first closes the eyes and finally", False, 5, ["The person first closes the…"]),
])
def test_an_answer_streams_whole_sentences(answer, stops, limit, shown):
    session = session_answering(answer, stops)
    assert list(session.ask("What colour is the hair?", max_new_tokens=limit)) == shown
    assert session.history == [("What colour is the hair?", "".join(shown).strip())]


def test_a_sentence_ends_at_a_stop_followed_by_a_space():
    assert last_sentence_end("No. Yes") == 3
    assert last_sentence_end("Really?! Then") == 8
    assert last_sentence_end("3.5 degrees") == 0 and last_sentence_end("Blond hair.") == 0  # not yet: more may come
