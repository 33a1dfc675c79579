"""Copy each vector's product price onto its row, kept in step by the triggers of 0002/0003 (now copying price too).

A price filter then runs inside the filtered ANN query like the category filter does: on the row the HNSW scan
already has, or as one range of an index for an exact search of few rows (search.selectors).
"""

from django.db import migrations, models

FORWARD = """
CREATE OR REPLACE FUNCTION imageembedding_copy_product() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT i.product_id INTO NEW.product_id FROM catalog_productimage i WHERE i.id = NEW.image_id;
    SELECT p.category_id, p.active, p.price INTO NEW.category_id, NEW.active, NEW.price
        FROM catalog_product p WHERE p.id = NEW.product_id;
    RETURN NEW;
END $$;
DROP TRIGGER imageembedding_copy_product ON search_imageembedding;
CREATE TRIGGER imageembedding_copy_product BEFORE INSERT OR UPDATE OF image_id, product_id, category_id, active, price
    ON search_imageembedding FOR EACH ROW EXECUTE FUNCTION imageembedding_copy_product();

CREATE OR REPLACE FUNCTION product_copy_to_imageembeddings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE search_imageembedding SET category_id = NEW.category_id, active = NEW.active, price = NEW.price
        WHERE product_id = NEW.id;
    RETURN NULL;
END $$;
DROP TRIGGER product_copy_to_imageembeddings ON catalog_product;
CREATE TRIGGER product_copy_to_imageembeddings AFTER UPDATE OF category_id, active, price ON catalog_product
    FOR EACH ROW WHEN (OLD.category_id IS DISTINCT FROM NEW.category_id OR OLD.active IS DISTINCT FROM NEW.active
                       OR OLD.price IS DISTINCT FROM NEW.price)
    EXECUTE FUNCTION product_copy_to_imageembeddings();

UPDATE search_imageembedding e SET price = p.price FROM catalog_product p WHERE p.id = e.product_id;
"""

BACKWARD = """
CREATE OR REPLACE FUNCTION imageembedding_copy_product() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT i.product_id INTO NEW.product_id FROM catalog_productimage i WHERE i.id = NEW.image_id;
    SELECT p.category_id, p.active INTO NEW.category_id, NEW.active FROM catalog_product p WHERE p.id = NEW.product_id;
    RETURN NEW;
END $$;
DROP TRIGGER imageembedding_copy_product ON search_imageembedding;
CREATE TRIGGER imageembedding_copy_product BEFORE INSERT OR UPDATE OF image_id, product_id, category_id, active
    ON search_imageembedding FOR EACH ROW EXECUTE FUNCTION imageembedding_copy_product();

CREATE OR REPLACE FUNCTION product_copy_to_imageembeddings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE search_imageembedding SET category_id = NEW.category_id, active = NEW.active WHERE product_id = NEW.id;
    RETURN NULL;
END $$;
DROP TRIGGER product_copy_to_imageembeddings ON catalog_product;
CREATE TRIGGER product_copy_to_imageembeddings AFTER UPDATE OF category_id, active ON catalog_product FOR EACH ROW
    WHEN (OLD.category_id IS DISTINCT FROM NEW.category_id OR OLD.active IS DISTINCT FROM NEW.active)
    EXECUTE FUNCTION product_copy_to_imageembeddings();
"""


class Migration(migrations.Migration):
    dependencies = [("search", "0004_space_calibration")]

    operations = [
        migrations.AddField(
            model_name="imageembedding",
            name="price",
            field=models.DecimalField(decimal_places=2, max_digits=10, null=True),
        ),
        migrations.RunSQL(FORWARD, reverse_sql=BACKWARD),
        migrations.AlterField(
            model_name="imageembedding",
            name="price",
            field=models.DecimalField(decimal_places=2, max_digits=10),
        ),
        migrations.AddIndex(
            model_name="imageembedding",
            index=models.Index(
                condition=models.Q(("active", True)), fields=["model", "price"], name="imageembedding_model_price"
            ),
        ),
    ]
