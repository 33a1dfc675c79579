"""Copy each vector's product category and active flag onto its row, kept in step by triggers.

Filtered ANN queries then read one table (see ImageEmbedding). The triggers are the only writers of the two
columns: an embedding takes its product's values when inserted, and a product's change of category or active
flag is copied to its embeddings in the same transaction, whichever code path (ORM, bulk update, SQL) made it.
"""

import django.db.models.deletion
from django.db import migrations, models

TRIGGERS = """
CREATE FUNCTION imageembedding_copy_product() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT p.category_id, p.active INTO NEW.category_id, NEW.active FROM catalog_product p WHERE p.id = NEW.product_id;
    RETURN NEW;
END $$;
CREATE TRIGGER imageembedding_copy_product BEFORE INSERT OR UPDATE OF product_id, category_id, active
    ON search_imageembedding FOR EACH ROW EXECUTE FUNCTION imageembedding_copy_product();

CREATE FUNCTION product_copy_to_imageembeddings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE search_imageembedding SET category_id = NEW.category_id, active = NEW.active WHERE product_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER product_copy_to_imageembeddings AFTER UPDATE OF category_id, active ON catalog_product FOR EACH ROW
    WHEN (OLD.category_id IS DISTINCT FROM NEW.category_id OR OLD.active IS DISTINCT FROM NEW.active)
    EXECUTE FUNCTION product_copy_to_imageembeddings();
"""

DROP_TRIGGERS = """
DROP TRIGGER product_copy_to_imageembeddings ON catalog_product;
DROP FUNCTION product_copy_to_imageembeddings();
DROP TRIGGER imageembedding_copy_product ON search_imageembedding;
DROP FUNCTION imageembedding_copy_product();
"""

BACKFILL = """
UPDATE search_imageembedding e SET category_id = p.category_id, active = p.active
    FROM catalog_product p WHERE p.id = e.product_id;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0004_product_sku_no_slash"),
        ("search", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="imageembedding",
            name="active",
            field=models.BooleanField(default=True),
        ),
        migrations.AddField(
            model_name="imageembedding",
            name="category",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="catalog.category",
            ),
        ),
        migrations.RunSQL(TRIGGERS + BACKFILL, reverse_sql=DROP_TRIGGERS),
        migrations.AlterField(
            model_name="imageembedding",
            name="category",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="catalog.category",
            ),
        ),
        migrations.AddIndex(
            model_name="imageembedding",
            index=models.Index(
                condition=models.Q(("active", True)),
                fields=["category", "model"],
                name="imageembedding_category_model",
            ),
        ),
    ]
