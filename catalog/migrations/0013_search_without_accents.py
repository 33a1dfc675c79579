"""Text search and the order by name without accents: "cafe" finds "Café" and "Éclair" sorts among the E's.

``lookalike_unaccent`` takes the accents off in SQL (decomposed, combining marks dropped, the few letters that do
not decompose mapped), because PostgreSQL's unaccent extension is not on every server: not the embedded one. It is
immutable, as the search document, a generated column, needs; the column is made again with it (a generated
column's expression cannot be altered), and its index with it: the product table is rewritten, locked meanwhile
(docs/deployment.md, "Upgrading"). ``normalize`` needs a UTF8 database, which is checked first."""

import django.contrib.postgres.indexes
import django.contrib.postgres.search
from django.db import migrations, models

import catalog.models

UNACCENT = r"""
CREATE OR REPLACE FUNCTION lookalike_unaccent(text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT translate(regexp_replace(normalize($1, NFD), '[\u0300-\u036f]', '', 'g'),
                       'øØłŁđĐħĦıŀĿ', 'oOlLdDhHilL') $$
"""


def database_is_utf8(apps, schema_editor):
    """normalize() needs a UTF8 database: said here, in words, rather than by every later insert of a product."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SHOW server_encoding")
        encoding = cursor.fetchone()[0]
    if encoding.upper() != "UTF8":
        raise RuntimeError(f"The database's encoding is {encoding}; Lookalike needs UTF8 (CREATE DATABASE ... "
                           "ENCODING 'UTF8'), for product text in any language as for this migration.")


class Migration(migrations.Migration):

    dependencies = [
        ("catalog", "0012_product_sku_nfc"),
    ]

    operations = [
        migrations.RunPython(database_is_utf8, migrations.RunPython.noop),
        migrations.RunSQL(UNACCENT, "DROP FUNCTION IF EXISTS lookalike_unaccent(text)"),
        migrations.RemoveIndex(model_name="product", name="product_search_document_gin"),
        migrations.RemoveField(model_name="product", name="search_document"),
        migrations.AddField(
            model_name="product",
            name="search_document",
            field=models.GeneratedField(
                db_persist=True,
                expression=django.contrib.postgres.search.CombinedSearchVector(
                    django.contrib.postgres.search.SearchVector(
                        catalog.models.Unaccented("title"), config="english", weight="A"),
                    "||",
                    django.contrib.postgres.search.SearchVector(
                        catalog.models.Unaccented("description"), config="english", weight="B"),
                    django.contrib.postgres.search.SearchConfig("english"),
                ),
                output_field=django.contrib.postgres.search.SearchVectorField(),
            ),
        ),
        migrations.AddIndex(
            model_name="product",
            index=django.contrib.postgres.indexes.GinIndex(fields=["search_document"],
                                                           name="product_search_document_gin"),
        ),
    ]
