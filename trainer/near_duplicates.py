"""Exact and near-duplicate questions by character n-gram Jaccard similarity.

Not a stage: `trainer/prepare_data.py` uses it to find test/val questions that also occur in the
train split (leakage) and `trainer/identity_probe.py` to check that no probe question was trained on.
Reads and writes nothing.

Method (exact, not an approximation such as MinHash): each text is normalised (Unicode NFKC,
casefolded, whitespace and punctuation removed), cut into overlapping character n-grams
(`NGRAM` = 2: a Chinese character pair is close to a word), and two texts are near-duplicates when
the Jaccard similarity |A ∩ B| / |A ∪ B| of their n-gram sets is at least `THRESHOLD` (0.7); equal
normalised texts are exact duplicates (similarity 1.0). An inverted index from n-gram to corpus
entries keeps the comparison to the candidates that share an n-gram: the bundled data (~360
records) takes well under a second. Pure Python, so data of hundreds of thousands of records would
want an approximate index instead (MinHash LSH, e.g. the datasketch library).

With 2-grams and 0.7, one changed character in a 15-character question still matches (0.75),
added punctuation, spaces or letter case do not hide a copy, and two questions that share only a
pattern (什么是光合作用 / 什么是区块链: 0.22) do not match.
"""

from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

NGRAM = 2
THRESHOLD = 0.7
METHOD = f"character {NGRAM}-gram Jaccard"


@dataclass(frozen=True)
class Match:
    """The most similar corpus entry of one query text."""

    query_index: int
    corpus_index: int
    similarity: float  # Jaccard of the n-gram sets, 0-1; 1.0 for an exact (normalised) copy
    exact: bool


def normalize(text: str) -> str:
    """NFKC, casefolded, without whitespace, punctuation and symbols (what a copy may differ in)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] in "LN")


def ngrams(text: str, n: int = NGRAM) -> frozenset[str]:
    """The set of character n-grams of the normalised text (the whole text when shorter than n)."""
    norm = normalize(text)
    if len(norm) <= n:
        return frozenset([norm]) if norm else frozenset()
    return frozenset(norm[i : i + n] for i in range(len(norm) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a ∩ b| / |a ∪ b|; 0.0 when both are empty."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def find_matches(queries: Sequence[str], corpus: Sequence[str], threshold: float = THRESHOLD) -> list[Match]:
    """For each query with a corpus entry at or above `threshold`, its most similar entry.

    Ties go to the earlier corpus entry, so the result is deterministic. An empty query (nothing
    left after normalisation) matches nothing.
    """
    corpus_norm = [normalize(t) for t in corpus]
    corpus_grams = [ngrams(t) for t in corpus]
    index: dict[str, list[int]] = defaultdict(list)
    exact_index: dict[str, int] = {}
    for i, grams in enumerate(corpus_grams):
        exact_index.setdefault(corpus_norm[i], i)
        for gram in grams:
            index[gram].append(i)
    matches = []
    for qi, text in enumerate(queries):
        norm = normalize(text)
        if not norm:
            continue
        if norm in exact_index:
            matches.append(Match(qi, exact_index[norm], 1.0, True))
            continue
        grams = ngrams(text)
        candidates = sorted({i for gram in grams for i in index.get(gram, ())})
        best = max(candidates, key=lambda i: (jaccard(grams, corpus_grams[i]), -i), default=None)
        if best is None:
            continue
        similarity = jaccard(grams, corpus_grams[best])
        if similarity >= threshold:
            matches.append(Match(qi, best, round(similarity, 3), False))
    return matches


def has_twin(texts: Sequence[str], threshold: float = THRESHOLD) -> list[bool]:
    """For each text, whether another text of the list is an exact or near copy of it."""
    norms = [normalize(t) for t in texts]
    grams = [ngrams(t) for t in texts]
    counts = Counter(norms)
    index: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(grams):
        for gram in g:
            index[gram].append(i)
    out = []
    for i, g in enumerate(grams):
        if not norms[i] or counts[norms[i]] > 1:
            out.append(bool(norms[i]))
            continue
        candidates = {j for gram in g for j in index[gram]} - {i}
        out.append(any(jaccard(g, grams[j]) >= threshold for j in candidates))
    return out
