"""Caption grammar: templates per dataset, attribute captions for shapes, and the vocabulary they
span.

A caption is a template filled with a subject ("a photo of a star"); for shapes the subject can
carry attributes: "a photo of a red star on a striped blue background". The tokenizer's vocabulary
is exactly the set of words this grammar can produce, so an unknown word is an error, never a silent
UNK.
"""
from __future__ import annotations

import numpy as np

from core import shapes
from core.config import PLACEHOLDERS
from core.errors import ConfigError

TEMPLATES = {
    "shapes": ("a photo of a {}", "a drawing of a {}", "a picture of a {}", "a rendering of a {}"),
    "cifar10": ("a photo of a {}", "a blurry photo of a {}", "a photo of the {}",
                "a close-up photo of a {}", "a low resolution photo of a {}",
                "a bright photo of a {}", "a dark photo of a {}", "a good photo of a {}"),
}


def class_caption(template: str, class_name: str) -> str:
    return template.format(class_name)


def attribute_caption(template: str, class_name: str, colour: int | None, background: int | None,
                      texture: int | None) -> str:
    """'a photo of a red star on a striped blue background'; None leaves an attribute out."""
    colours = list(shapes.COLOURS)
    subject = class_name if colour is None else f"{colours[colour]} {class_name}"
    caption = template.format(subject)
    if background is not None:
        texture_word = "" if texture is None else shapes.TEXTURES[texture] + " "
        caption += f" on a {texture_word}{colours[background]} background"
    return caption


def random_caption(dataset: str, class_name: str, attrs, rng: np.random.Generator,
                   attribute_prob: float) -> str:
    """A training caption: random template; each attribute phrase kept with probability
    attribute_prob."""
    templates = TEMPLATES[dataset]
    template = templates[rng.integers(len(templates))]
    if attrs is None:
        return class_caption(template, class_name)
    colour, background, texture = (int(a) for a in attrs)
    keep = rng.random(3) < attribute_prob
    return attribute_caption(template, class_name, colour if keep[0] else None,
                             background if keep[1] else None,
                             texture if keep[1] and keep[2] else None)


def random_captions(dataset: str, class_names, labels, attrs, rng: np.random.Generator,
                    attribute_prob: float) -> list[str]:
    """One random training caption per image; labels index class_names, attrs is (N, 3) or None."""
    return [random_caption(dataset, class_names[int(y)], None if attrs is None else attrs[i], rng,
                           attribute_prob)
            for i, y in enumerate(labels)]


def vocabulary(dataset: str, class_names) -> list[str]:
    """Every word the grammar can produce for these class names, sorted."""
    words = {w for t in TEMPLATES[dataset] for w in t.replace("{}", " ").split()}
    words.update(class_names)
    if dataset == "shapes":
        words.update(shapes.COLOURS)
        words.update(shapes.TEXTURES)
        words.update(("on", "a", "background"))
    return sorted(words)


def words(text: str) -> list[str]:
    """A caption's words as the tokenizer reads them: lower case, full stops and commas dropped."""
    return text.lower().replace(".", " ").replace(",", " ").split()


def check_caption(text: str, vocabulary_words, context_length: int) -> list[str]:
    """The caption's words, or a ConfigError naming an unknown word (with every known one) or the
    length (two of the context's tokens are <bos> and <eos>)."""
    found = words(text)
    known = set(vocabulary_words) | set(PLACEHOLDERS)
    unknown = [w for w in found if w not in known]
    if unknown:
        raise ConfigError(f"unknown word{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} "
                          f"in {text!r}; known words: {', '.join(sorted(vocabulary_words))}, and "
                          f"the placeholders {PLACEHOLDERS[0]}..{PLACEHOLDERS[-1]}")
    if len(found) + 2 > context_length:
        raise ConfigError(f"{text!r} has {len(found)} words; at most {context_length - 2} fit the "
                          f"text encoder's context (clip.context_length={context_length})")
    return found
