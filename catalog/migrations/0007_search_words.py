"""The catalog's vocabulary, for typo-tolerant text search (catalog/typos.py).

``catalog_searchword`` holds every distinct word (4 to 40 letters, lower-cased by the 'simple' text search
configuration: no stemming, so a typo is compared with the word as written) of any product's title or description.
``catalog_searchwordvariant`` holds each word and each of its one-letter deletions: every vocabulary word one edit
(insertion, deletion, substitution, swap) from a misspelt word shares a variant with it ("symmetric delete" spelling
correction), so finding candidates is a few index look-ups whatever the vocabulary's size.

Statement-level triggers keep both current on every write path (services, admin, bulk loads, COPY), in one pass per
statement. Words of deleted or edited products stay: a correction to a word nothing contains any more finds nothing.

Where the server ships pg_trgm (plain PostgreSQL's contrib; not the embedded server) the migration also creates the
extension and a trigram index on the words, which also finds longer words with two typos.
"""

from django.db import migrations

WORD_PATTERN = "^[^[:digit:][:punct:][:space:]]{4,40}$"

CREATE = f"""
CREATE TABLE catalog_searchword (word text PRIMARY KEY);
CREATE TABLE catalog_searchwordvariant (
    variant text NOT NULL,
    word text NOT NULL,
    PRIMARY KEY (variant, word)
);

CREATE FUNCTION catalog_searchword_variants(word text) RETURNS SETOF text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT word UNION SELECT overlay(word PLACING '' FROM i FOR 1) FROM generate_series(1, length(word)) AS i
$$;

-- Sorted inserts: two transactions adding overlapping words take their row locks in the same order.
CREATE FUNCTION catalog_searchword_collect() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH words AS (
        SELECT DISTINCT lexeme AS word
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

CREATE TRIGGER catalog_product_words_insert AFTER INSERT ON catalog_product
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION catalog_searchword_collect();
CREATE TRIGGER catalog_product_words_update AFTER UPDATE ON catalog_product
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION catalog_searchword_collect();

-- The words of the products already there.
INSERT INTO catalog_searchword (word)
SELECT DISTINCT lexeme FROM catalog_product,
       unnest(tsvector_to_array(to_tsvector('simple', title || ' ' || description))) AS lexeme
WHERE lexeme ~ '{WORD_PATTERN}';
INSERT INTO catalog_searchwordvariant (variant, word)
SELECT variant, word FROM catalog_searchword, catalog_searchword_variants(word) AS variant;

-- pg_trgm when this server has it and this role may create it (a trusted extension since PostgreSQL 13).
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        CREATE INDEX catalog_searchword_trgm ON catalog_searchword USING gin (word gin_trgm_ops);
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'pg_trgm not created (%): text search corrects one typo per word without it', SQLERRM;
END $$;
"""

DROP = """
DROP TRIGGER catalog_product_words_update ON catalog_product;
DROP TRIGGER catalog_product_words_insert ON catalog_product;
DROP FUNCTION catalog_searchword_collect();
DROP TABLE catalog_searchwordvariant;
DROP TABLE catalog_searchword;
DROP FUNCTION catalog_searchword_variants(text);
"""


class Migration(migrations.Migration):
    dependencies = [("catalog", "0006_product_sku_not_dot_segment")]

    operations = [migrations.RunSQL(CREATE, DROP)]
