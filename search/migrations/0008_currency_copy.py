"""Copy each vector's product currency onto its row beside its price (0005), kept in step by the same triggers: a
price range is in one currency, so in a catalog of several the filter runs inside the ANN query with the price."""

from django.db import migrations, models

FORWARD = """
CREATE OR REPLACE FUNCTION imageembedding_copy_product() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT i.product_id, COALESCE(i.colours[1], '') INTO NEW.product_id, NEW.colour
        FROM catalog_productimage i WHERE i.id = NEW.image_id;
    SELECT p.category_id, p.active, p.price, p.currency INTO NEW.category_id, NEW.active, NEW.price, NEW.currency
        FROM catalog_product p WHERE p.id = NEW.product_id;
    RETURN NEW;
END $$;
DROP TRIGGER imageembedding_copy_product ON search_imageembedding;
CREATE TRIGGER imageembedding_copy_product
    BEFORE INSERT OR UPDATE OF image_id, product_id, category_id, active, price, currency, colour
    ON search_imageembedding FOR EACH ROW EXECUTE FUNCTION imageembedding_copy_product();

CREATE OR REPLACE FUNCTION product_copy_to_imageembeddings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE search_imageembedding
        SET category_id = NEW.category_id, active = NEW.active, price = NEW.price, currency = NEW.currency
        WHERE product_id = NEW.id;
    RETURN NULL;
END $$;
DROP TRIGGER product_copy_to_imageembeddings ON catalog_product;
CREATE TRIGGER product_copy_to_imageembeddings AFTER UPDATE OF category_id, active, price, currency ON catalog_product
    FOR EACH ROW WHEN (OLD.category_id IS DISTINCT FROM NEW.category_id OR OLD.active IS DISTINCT FROM NEW.active
                       OR OLD.price IS DISTINCT FROM NEW.price OR OLD.currency IS DISTINCT FROM NEW.currency)
    EXECUTE FUNCTION product_copy_to_imageembeddings();

UPDATE search_imageembedding e SET currency = p.currency FROM catalog_product p WHERE p.id = e.product_id;
"""

BACKWARD = """
CREATE OR REPLACE FUNCTION imageembedding_copy_product() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT i.product_id, COALESCE(i.colours[1], '') INTO NEW.product_id, NEW.colour
        FROM catalog_productimage i WHERE i.id = NEW.image_id;
    SELECT p.category_id, p.active, p.price INTO NEW.category_id, NEW.active, NEW.price
        FROM catalog_product p WHERE p.id = NEW.product_id;
    RETURN NEW;
END $$;
DROP TRIGGER imageembedding_copy_product ON search_imageembedding;
CREATE TRIGGER imageembedding_copy_product
    BEFORE INSERT OR UPDATE OF image_id, product_id, category_id, active, price, colour
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
"""


class Migration(migrations.Migration):
    dependencies = [("search", "0007_image_details")]

    operations = [
        migrations.AddField(
            model_name="imageembedding",
            name="currency",
            field=models.CharField(default="", max_length=3),
        ),
        migrations.RunSQL(FORWARD, reverse_sql=BACKWARD),
    ]
