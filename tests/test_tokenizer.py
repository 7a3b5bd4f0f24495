"""Tokenizer: round trip, placeholders, padding, and the unknown-word error."""
import pytest

from core import captions
from core.shapes import CLASSES
from minidiff.tokenizer import BOS, EOS, PAD, PLACEHOLDERS, Tokenizer


@pytest.fixture
def tok():
    return Tokenizer.for_dataset("shapes", CLASSES, context_length=16)


def test_round_trip_every_attribute_caption(tok):
    text = captions.attribute_caption("a rendering of a {}", "crescent", 2, 5, 1)
    ids = tok.encode(text)
    assert ids[0] == BOS and ids[len(text.split()) + 1] == EOS and ids[-1] == PAD and len(ids) == 16
    assert tok.decode(ids) == text


def test_batch_and_empty_prompt(tok):
    batch = tok(["a photo of a star", ""])
    assert batch.shape == (2, 16)
    assert batch[1, :2].tolist() == [BOS, EOS] and (batch[1, 2:] == PAD).all()


def test_placeholders_are_reserved_and_not_in_captions(tok):
    assert tok.decode(tok.encode("a photo of a <new0>")) == "a photo of a <new0>"
    assert tok.placeholder_id("<new3>") == tok.stoi["<new3>"]
    assert not set(PLACEHOLDERS) & set(captions.vocabulary("shapes", CLASSES))
    with pytest.raises(ValueError, match="not a placeholder"):
        tok.placeholder_id("star")


def test_unknown_words_and_long_captions_are_errors(tok):
    with pytest.raises(ValueError, match=r"unknown word 'dragon' in 'a photo of a dragon'; "
                                         r"known words: a, arrow"):
        tok.encode("a photo of a dragon")
    with pytest.raises(ValueError, match="unknown word '<eos>'"):
        tok.encode("a photo of <eos>")
    with pytest.raises(ValueError, match="fit the text encoder.s context"):
        tok.encode(" ".join(["a"] * 15))
