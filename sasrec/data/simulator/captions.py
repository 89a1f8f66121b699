"""Simulated ``kuairec_caption_category.csv``: captions from per-tag vocabularies and a category tree.

Each of the 31 tags owns a disjoint pool of CJK characters and a vocabulary of 2-4 character tokens drawn
from it; filler tokens and generic hashtags come from a shared pool. A caption mixes tokens of the video's
tags with filler tokens (and a few tokens of a random tag), plus hashtags that ``topic_tag`` lists. The
first-level category is a fixed function of the main tag (with noise); second and third levels nest under
it. The real file's quirks are reproduced: empty captions, ``-124``/"UNKNOWN" categories, "UNKNOWN" cover
texts, ASCII commas, double quotes and newlines inside captions, and bare carriage returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sasrec.data.simulator.calibration import N_TAGS, TAG_FREQUENCY, SideFileParams
from sasrec.data.simulator.world import _World

CJK_FIRST, CJK_LAST = 0x4E00, 0x9FA5  # CJK Unified Ideographs (the common block)
UNKNOWN_ID, UNKNOWN_NAME = -124, "UNKNOWN"
#: First-level category ids, as in the real file (1..39 without 30).
FIRST_LEVEL_IDS = np.array([i for i in range(1, 40) if i != 30], dtype=np.int64)
MAX_WORDS, MAX_HASHTAGS = 12, 4
CATEGORY_CHARACTERS = 4000
SECOND_ID_RANGE, THIRD_ID_RANGE = (200, 800), (1400, 2700)
#: Separators between caption tokens (Chinese captions have no spaces between words) and their shares.
SEPARATORS = ("", " ", "，", "！", "。", "…")
SEPARATOR_SHARES = (0.55, 0.2, 0.12, 0.05, 0.05, 0.03)
ENDINGS = ("", "🔥", "❤️", "~", "...")
ENDING_SHARES = (0.85, 0.05, 0.04, 0.03, 0.03)


@dataclass(frozen=True)
class _Vocabulary:
    """Characters and tokens of the captions (internal)."""

    tag_chars: np.ndarray  # (31, C) code points of each tag's characters
    tokens: np.ndarray  # (n_tokens,) object: 31 * S tag tokens, then filler tokens, then generic hashtags
    token_tag: np.ndarray  # (n_tokens,) tag of a token; -1 filler, -2 generic hashtag
    token_length: np.ndarray  # (n_tokens,) characters
    category_chars: np.ndarray  # (CATEGORY_CHARACTERS,) code points for category names
    per_tag: int  # S, tokens per tag

    @property
    def filler_first(self) -> int:
        """Index of the first filler token."""
        return N_TAGS * self.per_tag

    @property
    def generic_first(self) -> int:
        """Index of the first generic hashtag."""
        return int(np.flatnonzero(self.token_tag == -2)[0])


def _strings(codes: np.ndarray) -> np.ndarray:
    """(n,) object array of strings from (n, L) code points, 0 = no character."""
    width = codes.shape[1]
    return np.ascontiguousarray(codes, dtype=np.uint32).view(f"<U{width}")[:, 0].astype(object)


def _token_codes(
    pool: np.ndarray, n: int, lengths: tuple[int, ...], shares: tuple[float, ...], rng: np.random.Generator
) -> np.ndarray:
    """(n, max(lengths)) code points of n tokens of pool characters (0-padded)."""
    length = rng.choice(np.asarray(lengths), size=n, p=np.asarray(shares) / np.sum(shares))  # (n,)
    codes = pool[rng.integers(0, len(pool), size=(n, max(lengths)))]  # (n, L)
    return np.where(np.arange(max(lengths))[None, :] < length[:, None], codes, 0)


def _vocabulary(params: SideFileParams, rng: np.random.Generator) -> _Vocabulary:
    """Draw the disjoint character pools and the token vocabularies."""
    n_tag_chars = N_TAGS * params.tag_characters
    needed = n_tag_chars + params.filler_characters + CATEGORY_CHARACTERS
    pool = CJK_FIRST + rng.permutation(CJK_LAST - CJK_FIRST + 1)[:needed]
    tag_chars = pool[:n_tag_chars].reshape(N_TAGS, params.tag_characters)  # (31, C)
    filler_chars = pool[n_tag_chars : n_tag_chars + params.filler_characters]
    category_chars = pool[n_tag_chars + params.filler_characters :]
    s = params.tag_vocabulary
    tag_codes = np.concatenate(
        [_token_codes(tag_chars[t], s, (2, 3, 4), (0.45, 0.4, 0.15), rng) for t in range(N_TAGS)]
    )  # (31 * S, 4)
    filler_codes = _token_codes(filler_chars, params.filler_vocabulary, (2, 3, 4), (0.5, 0.35, 0.15), rng)
    generic_codes = _token_codes(filler_chars, params.generic_hashtags, (4, 5, 6, 7, 8), (1, 1, 1, 1, 1), rng)
    width = generic_codes.shape[1]
    codes = np.concatenate(
        [
            np.pad(tag_codes, ((0, 0), (0, width - 4))),
            np.pad(filler_codes, ((0, 0), (0, width - 4))),
            generic_codes,
        ]
    )  # (n_tokens, 8)
    token_tag = np.concatenate(
        [
            np.repeat(np.arange(N_TAGS), s),
            np.full(params.filler_vocabulary, -1),
            np.full(params.generic_hashtags, -2),
        ]
    )
    return _Vocabulary(
        tag_chars=tag_chars,
        tokens=_strings(codes),
        token_tag=token_tag,
        token_length=(codes > 0).sum(axis=1),
        category_chars=category_chars,
        per_tag=s,
    )


def _zipf_index(n: int, size: tuple[int, ...], rng: np.random.Generator, exponent: float = 0.9) -> np.ndarray:
    """Indices 0..n-1 with Zipf-like frequencies (index 0 the most frequent)."""
    weights = 1.0 / (np.arange(n) + 1.0) ** exponent
    return rng.choice(n, size=size, p=weights / weights.sum())


def _tags_of_slots(world: _World, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(V, K) tags drawn from each video's own tags (by its tag weights), one per slot."""
    cumulative = np.cumsum(world.tag_weights, axis=1)  # (V, 4)
    u = rng.random(shape)  # (V, K)
    slot = (u[:, :, None] >= cumulative[:, None, :]).sum(axis=2)  # (V, K)
    slot = np.minimum(slot, world.n_tags[:, None] - 1)
    return np.take_along_axis(world.tag_ids, slot, axis=1)  # (V, K)


def _random_tags(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return rng.choice(N_TAGS, size=shape, p=TAG_FREQUENCY / TAG_FREQUENCY.sum())


def _at_least_one(mask: np.ndarray, eligible: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``mask & eligible``, with one random eligible row switched on when none is."""
    mask = mask & eligible
    if not mask.any() and eligible.any():
        mask[rng.choice(np.flatnonzero(eligible))] = True
    return mask


def _join(pieces: list[np.ndarray]) -> np.ndarray:
    """Element-wise concatenation of (V,) object arrays of strings."""
    text = np.full(len(pieces[0]), "", dtype=object)
    for piece in pieces:  # a few columns
        text = text + piece
    return text


@dataclass(frozen=True)
class _Words:
    """Token indices of every caption (internal): -1 where a slot is empty."""

    words: np.ndarray  # (V, MAX_WORDS)
    hashtags: np.ndarray  # (V, MAX_HASHTAGS), distinct within a row
    has_caption: np.ndarray  # (V,)


def _draw_words(
    world: _World, vocab: _Vocabulary, params: SideFileParams, rng: np.random.Generator
) -> _Words:
    """Token indices of the captions' words and hashtags."""
    n_videos, s = world.n_videos, vocab.per_tag
    has_caption = rng.random(n_videos) >= params.caption_missing_share  # (V,)
    n_words = np.clip(1 + rng.poisson(params.mean_caption_words - 1, n_videos), 1, MAX_WORDS)  # (V,)
    shape = (n_videos, MAX_WORDS)
    u = rng.random(shape)
    tag = np.where(
        u < params.own_word_share, _tags_of_slots(world, shape, rng), _random_tags(shape, rng)
    )  # (V, W) only used where the word is a tag token
    tag_word = tag * s + _zipf_index(s, shape, rng)
    filler_word = vocab.filler_first + _zipf_index(vocab.generic_first - vocab.filler_first, shape, rng)
    is_tag_word = u < params.own_word_share + params.other_word_share
    words = np.where(is_tag_word, tag_word, filler_word)
    words = np.where((np.arange(MAX_WORDS)[None, :] < n_words[:, None]) & has_caption[:, None], words, -1)

    has_hashtags = has_caption & (rng.random(n_videos) < params.hashtag_share)
    n_hashtags = 1 + rng.binomial(MAX_HASHTAGS - 1, 0.25, n_videos)  # (V,)
    hshape = (n_videos, MAX_HASHTAGS)
    own = rng.random(hshape) < params.own_hashtag_share
    own_hashtag = _tags_of_slots(world, hshape, rng) * s + _zipf_index(s, hshape, rng, exponent=1.2)
    generic = vocab.generic_first + _zipf_index(params.generic_hashtags, hshape, rng, exponent=1.2)
    hashtags = np.where(own, own_hashtag, generic)
    hashtags = np.where(
        (np.arange(MAX_HASHTAGS)[None, :] < n_hashtags[:, None]) & has_hashtags[:, None], hashtags, -1
    )
    hashtags = np.sort(hashtags, axis=1)[:, ::-1]  # (V, H) present first, descending
    repeated = np.c_[np.zeros(n_videos, dtype=bool), hashtags[:, 1:] == hashtags[:, :-1]]
    hashtags = np.sort(np.where(repeated, -1, hashtags), axis=1)[:, ::-1]  # distinct, present first
    return _Words(words=words, hashtags=np.ascontiguousarray(hashtags), has_caption=has_caption)


def _caption_text(
    words: _Words, vocab: _Vocabulary, params: SideFileParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(captions, topic tags, quirk counts): the caption strings and the "[a,b]" topic_tag strings."""
    n_videos = len(words.has_caption)
    tokens = np.r_[vocab.tokens, np.array([""], dtype=object)]  # index -1 -> ""
    n_words = (words.words >= 0).sum(axis=1)  # (V,)
    separator = np.asarray(SEPARATORS, dtype=object)[
        rng.choice(len(SEPARATORS), size=(n_videos, MAX_WORDS), p=np.asarray(SEPARATOR_SHARES))
    ]  # (V, W)
    eligible = n_words >= 2
    inner = 1 + rng.integers(0, MAX_WORDS, n_videos) % np.maximum(n_words - 1, 1)  # (V,) a slot 1..n-1
    quirks: dict[str, np.ndarray] = {}
    for name, share, mark in (
        ("comma", params.comma_share, ","),
        ("newline", params.newline_share, "\n"),
    ):  # two quirks
        quirks[name] = _at_least_one(rng.random(n_videos) < share, eligible, rng)
        separator[quirks[name], inner[quirks[name]]] = mark
        eligible = eligible & ~quirks[name]
    word_text = tokens[words.words]  # (V, W)
    quirks["quote"] = _at_least_one(rng.random(n_videos) < params.quote_share, words.has_caption, rng)
    word_text[quirks["quote"], 0] = '"' + word_text[quirks["quote"], 0] + '"'
    present = words.words >= 0
    pieces = [
        np.where(present[:, k] & (k > 0), separator[:, k], "") + word_text[:, k] for k in range(MAX_WORDS)
    ]
    body = _join(pieces)  # (V,)

    hashtag_text = np.where(words.hashtags >= 0, "#" + tokens[words.hashtags], "")  # (V, H)
    spaced = np.where(words.hashtags >= 0, hashtag_text + " ", "")
    tags_block = _join([spaced[:, k] for k in range(MAX_HASHTAGS)])
    has_hashtags = words.hashtags[:, 0] >= 0
    first = rng.random(n_videos) < 0.3  # hashtags before the words, else after
    ending = np.asarray(ENDINGS, dtype=object)[
        rng.choice(len(ENDINGS), size=n_videos, p=np.asarray(ENDING_SHARES))
    ]
    caption = np.where(
        first, tags_block + body + ending, body + ending + np.where(has_hashtags, " ", "") + tags_block
    )
    bare_cr = _at_least_one(rng.random(n_videos) < params.carriage_return_share, words.has_caption, rng)
    caption[bare_cr] = caption[bare_cr] + "\r"  # an unquoted carriage return, as in the real file
    quirks["carriage_return"] = bare_cr
    caption = np.where(words.has_caption, caption, "")

    # topic_tag: the caption's hashtags in code-point order, "[a,b]" (no spaces), "[]" without hashtags.
    listed = np.where(words.hashtags >= 0, tokens[words.hashtags], "\U0010ffff")
    listed = np.sort(listed.astype(str), axis=1).astype(object)  # (V, H)
    keep = listed != "\U0010ffff"
    joined = _join(
        [np.where(keep[:, k], np.where(k > 0, ",", "") + listed[:, k], "") for k in range(MAX_HASHTAGS)]
    )
    topic = "[" + joined + "]"
    counts = {name: int(mask.sum()) for name, mask in quirks.items()}
    return caption, topic, counts


def _cover_text(
    world: _World, vocab: _Vocabulary, params: SideFileParams, rng: np.random.Generator
) -> np.ndarray:
    """manual_cover_text: "UNKNOWN" for most videos, else 1-2 tokens of the video's tags (never empty)."""
    n_videos, s = world.n_videos, vocab.per_tag
    tags = _tags_of_slots(world, (n_videos, 2), rng)
    index = tags * s + _zipf_index(s, (n_videos, 2), rng)
    second = np.where(rng.random(n_videos) < 0.5, vocab.tokens[index[:, 1]], "")
    text = _join([vocab.tokens[index[:, 0]], second])
    return np.where(rng.random(n_videos) < params.cover_unknown_share, UNKNOWN_NAME, text)


# ------------------------------------------------------------------------------------------ categories
@dataclass(frozen=True)
class _CategoryTree:
    """Three nested category levels (internal)."""

    first_names: np.ndarray  # (38,) names of FIRST_LEVEL_IDS
    home: np.ndarray  # (31,) index into FIRST_LEVEL_IDS of each tag's home category
    second_home: np.ndarray  # (31,) a second home (index) for the most frequent tags, -1 otherwise
    second_start: np.ndarray  # (38,) first child of each first-level category in second_ids
    second_count: np.ndarray  # (38,) children
    second_ids: np.ndarray  # (n_second,)
    second_names: np.ndarray
    third_start: np.ndarray  # (n_second,)
    third_count: np.ndarray
    third_ids: np.ndarray  # (n_third,)
    third_names: np.ndarray


def _names(chars: np.ndarray, first: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Names whose first characters ``first`` are distinct, followed by random characters (lengths 1-4)."""
    codes = chars[rng.integers(0, len(chars), size=(len(first), 4))]
    codes[:, 0] = first
    return _strings(np.where(np.arange(4)[None, :] < lengths[:, None], codes, 0))


def _category_tree(vocab: _Vocabulary, params: SideFileParams, rng: np.random.Generator) -> _CategoryTree:
    """Draw the category names, each tag's home category and the nested second and third levels."""
    chars = vocab.category_chars
    distinct = chars[rng.permutation(len(chars))]  # distinct first characters, used in order
    n_first = len(FIRST_LEVEL_IDS)
    first_names = _names(chars, distinct[:n_first], rng.choice([2, 3], size=n_first, p=[0.8, 0.2]), rng)
    order = rng.permutation(n_first)
    home = order[:N_TAGS]
    extra = order[N_TAGS:]
    second_home = np.full(N_TAGS, -1)
    second_home[np.argsort(-TAG_FREQUENCY, kind="stable")[: len(extra)]] = extra

    second_count = 1 + rng.poisson(params.second_per_first - 1, n_first)  # (38,)
    n_second = int(second_count.sum())
    second_ids = SECOND_ID_RANGE[0] + rng.choice(
        SECOND_ID_RANGE[1] - SECOND_ID_RANGE[0], n_second, replace=False
    )
    second_start = np.r_[0, np.cumsum(second_count)[:-1]]
    parent = np.repeat(np.arange(n_first), second_count)  # (n_second,)
    suffix = _names(chars, distinct[n_first : n_first + n_second], np.full(n_second, 2), rng)
    second_names = first_names[parent] + suffix
    third_count = rng.poisson(params.third_per_second, n_second)  # (n_second,) may be 0
    n_third = int(third_count.sum())
    third_ids = THIRD_ID_RANGE[0] + rng.choice(THIRD_ID_RANGE[1] - THIRD_ID_RANGE[0], n_third, replace=False)
    offset = n_first + n_second
    third_names = _names(
        chars,
        distinct[offset : offset + n_third],
        rng.choice([2, 3, 4], size=n_third, p=[0.5, 0.35, 0.15]),
        rng,
    )
    return _CategoryTree(
        first_names=first_names,
        home=home,
        second_home=second_home,
        second_start=second_start,
        second_count=second_count,
        second_ids=second_ids,
        second_names=second_names,
        third_start=np.r_[0, np.cumsum(third_count)[:-1]],
        third_count=third_count,
        third_ids=third_ids,
        third_names=third_names,
    )


def _categories(
    world: _World, tree: _CategoryTree, params: SideFileParams, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The six category columns of every video: ids (-124 unknown) and names ("UNKNOWN")."""
    n_videos = world.n_videos
    main = world.primary
    first = tree.home[main]  # (V,) index into FIRST_LEVEL_IDS
    use_second_home = (tree.second_home[main] >= 0) & (rng.random(n_videos) < 0.4)
    first = np.where(use_second_home, tree.second_home[main], first)
    noisy = rng.random(n_videos) < params.first_level_noise
    other_tag = np.where(
        (world.n_tags >= 2) & (rng.random(n_videos) < 0.5),
        world.tag_ids[:, 1],
        _random_tags((n_videos,), rng),
    )  # a second tag of the video, else a random tag
    first = np.where(noisy, tree.home[other_tag], first)
    first_known = rng.random(n_videos) >= params.first_unknown_share

    child = (main + _zipf_index(8, (n_videos,), rng, exponent=1.0)) % tree.second_count[first]
    second = tree.second_start[first] + child  # (V,) index into second_ids
    second_known = first_known & (rng.random(n_videos) >= params.second_unknown_share)
    grandchild = _zipf_index(4, (n_videos,), rng) % np.maximum(tree.third_count[second], 1)
    third = tree.third_start[second] + grandchild
    third_known = (
        second_known & (tree.third_count[second] > 0) & (rng.random(n_videos) >= params.third_unknown_share)
    )
    third = np.where(third_known, third, 0)
    return {
        "first_level_category_id": np.where(first_known, FIRST_LEVEL_IDS[first], UNKNOWN_ID),
        "first_level_category_name": np.where(first_known, tree.first_names[first], UNKNOWN_NAME),
        "second_level_category_id": np.where(second_known, tree.second_ids[second], UNKNOWN_ID),
        "second_level_category_name": np.where(second_known, tree.second_names[second], UNKNOWN_NAME),
        "third_level_category_id": np.where(
            third_known, tree.third_ids[third] if len(tree.third_ids) else 0, UNKNOWN_ID
        ),
        "third_level_category_name": np.where(
            third_known, tree.third_names[third] if len(tree.third_ids) else "", UNKNOWN_NAME
        ),
    }


# ------------------------------------------------------------------------------------- table and truth
def _majority_accuracy(codes: np.ndarray, main: np.ndarray) -> float:
    """Accuracy of predicting ``main`` (0..30) by the most frequent main tag of each code (in sample)."""
    _, index = np.unique(codes, return_inverse=True)
    table = np.bincount(index * N_TAGS + main, minlength=(index.max() + 1) * N_TAGS).reshape(-1, N_TAGS)
    return float(table.max(axis=1).sum() / len(main))


def _caption_truth(
    world: _World, vocab: _Vocabulary, words: _Words, columns: dict[str, np.ndarray], quirks: dict[str, int]
) -> dict[str, Any]:
    """How much signal about the tags the caption file carries (figures of side_ground_truth.json)."""
    main = world.primary
    own_tags = np.where(np.arange(4)[None, :] < world.n_tags[:, None], world.tag_ids, -9)  # (V, 4)
    tokens = np.c_[words.words, words.hashtags]  # (V, W + H)
    present = tokens >= 0
    token_tag = np.where(present, vocab.token_tag[np.maximum(tokens, 0)], -3)  # (V, T)
    own = present & (token_tag[:, :, None] == own_tags[:, None, :]).any(axis=2)
    other = present & (token_tag >= 0) & ~own
    n_tokens = max(int(present.sum()), 1)
    # A reader who knows the character pools: the main tag as the tag with most characters in the caption.
    rows = np.broadcast_to(np.arange(world.n_videos)[:, None], tokens.shape)
    is_tag = token_tag >= 0
    length = vocab.token_length[np.maximum(tokens, 0)]
    chars = np.bincount(
        rows[is_tag] * N_TAGS + token_tag[is_tag], weights=length[is_tag], minlength=world.n_videos * N_TAGS
    ).reshape(world.n_videos, N_TAGS)  # (V, 31)
    described = words.has_caption & (chars.sum(axis=1) > 0)
    chance = float(np.bincount(main, minlength=N_TAGS).max() / world.n_videos)
    first_ids = columns["first_level_category_id"]
    known = first_ids != UNKNOWN_ID
    return {
        "videos": int(world.n_videos),
        "captions_empty": int((~words.has_caption).sum()),
        "own_tag_token_share": round(float(own.sum() / n_tokens), 4),
        "other_tag_token_share": round(float(other.sum() / n_tokens), 4),
        "filler_or_generic_token_share": round(float((present & (token_tag < 0)).sum() / n_tokens), 4),
        "main_tag_from_caption_characters_accuracy": round(
            float(np.mean(chars[described].argmax(axis=1) == main[described])) if described.any() else 0.0, 4
        ),
        "main_tag_chance": round(chance, 4),
        "main_tag_from_first_level_accuracy": round(_majority_accuracy(first_ids, main), 4),
        "main_tag_from_first_level_accuracy_known_only": round(
            _majority_accuracy(first_ids[known], main[known]) if known.any() else 0.0, 4
        ),
        "main_tag_from_second_level_accuracy": round(
            _majority_accuracy(columns["second_level_category_id"], main), 4
        ),
        "first_level_unknown": int((~known).sum()),
        "second_level_unknown": int((columns["second_level_category_id"] == UNKNOWN_ID).sum()),
        "third_level_unknown": int((columns["third_level_category_id"] == UNKNOWN_ID).sum()),
        "captions_with": quirks,
        "tag_characters": {str(t): "".join(map(chr, vocab.tag_chars[t])) for t in range(N_TAGS)},
    }


def _caption_table(
    world: _World, params: SideFileParams, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict[str, Any], np.ndarray]:
    """The caption file's rows (one per video, official columns), its ground truth, and the 31 tag names.

    The tag names (each tag's most frequent token) are the ``video_tag_name`` of the daily file.
    """
    vocab = _vocabulary(params, rng)
    words = _draw_words(world, vocab, params, rng)
    caption, topic, quirks = _caption_text(words, vocab, params, rng)
    cover = _cover_text(world, vocab, params, rng)
    tree = _category_tree(vocab, params, rng)
    columns = _categories(world, tree, params, rng)
    frame = pd.DataFrame(
        {
            "video_id": np.arange(world.n_videos),
            "manual_cover_text": cover,
            "caption": caption,
            "topic_tag": topic,
            **columns,
        }
    )
    truth = _caption_truth(world, vocab, words, columns, quirks)
    tag_names = vocab.tokens[np.arange(N_TAGS) * vocab.per_tag]  # (31,) the first (most frequent) token
    return frame, truth, tag_names
