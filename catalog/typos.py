"""Spelling corrections for text search: the catalog's words within a typo or two of the words a shopper typed.

The vocabulary is every 4-to-40-letter word of the catalog's titles and descriptions, kept by PostgreSQL triggers
(migration 0007) in ``catalog_searchword``, with each word's one-letter deletions in ``catalog_searchwordvariant``.
Candidates come from one of two strategies, and one rule accepts them (``allowed_typos``: an edit distance that grows
with the word's length, as in most shop search engines):

- ``"variants"`` (every server, including the embedded one, which has no pg_trgm): every vocabulary word one edit from
  a typed word shares a variant with it; a few primary-key look-ups per word, whatever the catalog's size.
- ``"trigram"`` (servers with pg_trgm): the same look-ups plus pg_trgm's ``%`` on a trigram index of the words, which
  also finds two typos in a long word that share no variant ("sweattshirtt"). Trigrams alone miss a swap in a short
  word ("chiar" shares 2 of 10 trigrams with "chair"), hence both.
"""

from __future__ import annotations

import unicodedata

from django.db import connections, router

from catalog.models import Product

MIN_LENGTH_ONE_TYPO = 5  # "hodie" -> hoodie; shorter words are too close to too many others ("lamp", "camp")
MIN_LENGTH_TWO_TYPOS = 9
MAX_WORD_LENGTH = 40  # the vocabulary's longest word
MAX_WORDS = 8  # a query of more distinct words is searched as typed
MAX_CORRECTIONS = 3  # per word, closest first
STRATEGIES = ("trigram", "variants")
# What lookalike_unaccent (migration 0013) maps beside the combining marks it drops: the vocabulary's words are
# stored without accents (migration 0015), and a typed word is compared so, in Python, where the edit distance is
# (tests/test_text_search.py checks that the two agree).
_UNDECOMPOSED = str.maketrans("øØłŁđĐħĦıŀĿ", "oOlLdDhHilL")


def unaccented(word: str) -> str:
    """``word`` as ``lookalike_unaccent`` leaves it: "crème" -> "creme"."""
    decomposed = unicodedata.normalize("NFD", word)
    return "".join(c for c in decomposed if not "\u0300" <= c <= "\u036f").translate(_UNDECOMPOSED)


def allowed_typos(word: str) -> int:
    return 2 if len(word) >= MIN_LENGTH_TWO_TYPOS else 1 if len(word) >= MIN_LENGTH_ONE_TYPO else 0


def text_search_strategy() -> str:
    """The strategy: "trigram" where the database has pg_trgm (migration 0007 creates it when it can), else "variants".

    Asked once per database connection: an extension is not created or dropped under a running site.
    """
    connection = _read_connection()
    strategy = getattr(connection, "lookalike_text_search_strategy", None)
    if strategy is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_trgm')")
            strategy = "trigram" if cursor.fetchone()[0] else "variants"
        connection.lookalike_text_search_strategy = strategy
    return strategy


def _read_connection():
    """The connection a shopper's read takes: a replica's, where the request may read one (config/db_router.py)."""
    return connections[router.db_for_read(Product)]  # the vocabulary is made of the products' words


def corrections(*, words: list[str], strategy: str | None = None) -> dict[str, list[str]]:
    """For each of ``words`` (lower case) that has any, its closest vocabulary words other than itself.

    ``strategy`` defaults to ``text_search_strategy()``; "trigram" needs pg_trgm.
    """
    strategy = strategy or text_search_strategy()
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown text search strategy {strategy!r}")
    words = [w for w in dict.fromkeys(words) if allowed_typos(w) and len(w) <= MAX_WORD_LENGTH][:MAX_WORDS]
    if not words:
        return {}
    plain = {word: unaccented(word) for word in words}  # compared as the vocabulary holds words: without accents
    typed, variants = zip(*((w, v) for w in words for v in _variants(plain[w])))
    sql = [
        "SELECT q.word, v.word FROM unnest(%s::text[], %s::text[]) AS q(word, variant)"
        " JOIN catalog_searchwordvariant AS v ON v.variant = q.variant"
    ]
    params: list = [list(typed), list(variants)]
    if strategy == "trigram":
        sql.append(
            "SELECT q.word, s.word FROM unnest(%s::text[], %s::text[]) AS q(word, plain)"
            " JOIN catalog_searchword AS s ON s.word %% q.plain"
        )
        params += [words, [plain[word] for word in words]]
    with _read_connection().cursor() as cursor:
        cursor.execute(" UNION ".join(sql), params)
        candidates = set(cursor.fetchall())  # a word may share several variants with a typo
    found: dict[str, list[tuple[int, str]]] = {}
    for word, candidate in candidates:
        # Not the word itself with other accents: a vocabulary kept from before 0015 holds "café" beside "cafe".
        if unaccented(candidate) != plain[word] and (
            distance := edit_distance(plain[word], candidate, limit=allowed_typos(word))
        ) is not None:
            found.setdefault(word, []).append((distance, candidate))
    return {word: [c for _, c in sorted(found[word])[:MAX_CORRECTIONS]] for word in words if word in found}


def _variants(word: str) -> set[str]:
    return {word} | {word[:i] + word[i + 1 :] for i in range(len(word))}


def edit_distance(a: str, b: str, *, limit: int) -> int | None:
    """Optimal-string-alignment distance (insertions, deletions, substitutions, swaps of neighbours) between ``a``
    and ``b``, or None when it exceeds ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return None
    before, previous = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            cost = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if before is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, before[j - 2] + 1)
            current.append(cost)
        if min(current) > limit:
            return None
        before, previous = previous, current
    return previous[-1] if previous[-1] <= limit else None
