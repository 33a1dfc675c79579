"""Text search and the order by name without accents: "cafe" finds "Café" and "Éclair" sorts among the E's.

``lookalike_unaccent`` takes the accents off in SQL (decomposed, combining marks dropped, the few letters that do
not decompose mapped), because PostgreSQL's unaccent extension is not on every server: not the embedded one. It is
immutable, as the search document, a generated column, needs; the column is made again with it (a generated
column's expression cannot be altered), and its index with it."""

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


class Migration(migrations.Migration):

    dependencies = [
        ("catalog", "0012_product_sku_nfc"),
    ]

    operations = [
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
