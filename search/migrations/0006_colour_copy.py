"""Copy each vector's photo's main colour (ProductImage.colours[1]) onto its row, kept in step by triggers like
the product's category and price (0002, 0003, 0005), so a colour filter runs inside the ANN query too."""

from django.db import migrations, models

FORWARD = """
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

CREATE OR REPLACE FUNCTION productimage_copy_to_imageembeddings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE search_imageembedding SET product_id = NEW.product_id, colour = COALESCE(NEW.colours[1], '')
        WHERE image_id = NEW.id;
    RETURN NULL;
END $$;
DROP TRIGGER productimage_copy_to_imageembeddings ON catalog_productimage;
CREATE TRIGGER productimage_copy_to_imageembeddings AFTER UPDATE OF product_id, colours ON catalog_productimage
    FOR EACH ROW WHEN (OLD.product_id IS DISTINCT FROM NEW.product_id OR OLD.colours IS DISTINCT FROM NEW.colours)
    EXECUTE FUNCTION productimage_copy_to_imageembeddings();
"""

BACKWARD = """
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

CREATE OR REPLACE FUNCTION productimage_copy_to_imageembeddings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE search_imageembedding SET product_id = NEW.product_id WHERE image_id = NEW.id;
    RETURN NULL;
END $$;
DROP TRIGGER productimage_copy_to_imageembeddings ON catalog_productimage;
CREATE TRIGGER productimage_copy_to_imageembeddings AFTER UPDATE OF product_id ON catalog_productimage
    FOR EACH ROW WHEN (OLD.product_id IS DISTINCT FROM NEW.product_id)
    EXECUTE FUNCTION productimage_copy_to_imageembeddings();
"""


class Migration(migrations.Migration):
    dependencies = [("catalog", "0008_productimage_colours"), ("search", "0005_price_copy")]

    operations = [
        migrations.AddField(
            model_name="imageembedding",
            name="colour",
            field=models.CharField(blank=True, default="", max_length=12),
        ),
        migrations.RunSQL(FORWARD, reverse_sql=BACKWARD),
        migrations.AddIndex(
            model_name="imageembedding",
            index=models.Index(
                condition=models.Q(("active", True)), fields=["model", "colour"], name="imageembedding_model_colour"
            ),
        ),
    ]
