"""The vocabulary of typo correction without accents, as the search document has been since 0013: "cremme" is one
typo from "creme", but two from the "crème" the vocabulary held, and found nothing.

The collecting trigger stores each word as ``lookalike_unaccent`` leaves it; the words of the products already there
are added so (those with accents stay: harmless, a correction to one finds what its plain spelling finds). Reads
every product once, as migration 0007 did."""

from django.db import migrations

WORD_PATTERN = "^[^[:digit:][:punct:][:space:]]{4,40}$"


def collect(word: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION catalog_searchword_collect() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH words AS (
        SELECT DISTINCT {word} AS word
        FROM new_rows AS product,
             unnest(tsvector_to_array(to_tsvector('simple', product.title || ' ' || product.description))) AS lexeme
        WHERE lexeme ~ '{WORD_PATTERN}'
    ), added AS (
        INSERT INTO catalog_searchword (word) SELECT word FROM words ORDER BY word
        ON CONFLICT DO NOTHING RETURNING word
    )
    INSERT INTO catalog_searchwordvariant (variant, word)
    SELECT variant, added.word FROM added, catalog_searchword_variants(added.word) AS variant
    ORDER BY 1, 2 ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
"""


PLAIN_WORDS = f"""
WITH added AS (
    INSERT INTO catalog_searchword (word)
    SELECT DISTINCT lookalike_unaccent(lexeme) FROM catalog_product,
           unnest(tsvector_to_array(to_tsvector('simple', title || ' ' || description))) AS lexeme
    WHERE lexeme ~ '{WORD_PATTERN}'
    ORDER BY 1
    ON CONFLICT DO NOTHING RETURNING word
)
INSERT INTO catalog_searchwordvariant (variant, word)
SELECT variant, added.word FROM added, catalog_searchword_variants(added.word) AS variant
ORDER BY 1, 2 ON CONFLICT DO NOTHING;
"""


class Migration(migrations.Migration):
    dependencies = [("catalog", "0014_name_and_sku_indexes")]

    operations = [
        migrations.RunSQL(collect("lookalike_unaccent(lexeme)"), collect("lexeme")),
        migrations.RunSQL(PLAIN_WORDS, migrations.RunSQL.noop),
    ]
