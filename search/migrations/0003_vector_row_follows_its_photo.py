"""A vector row's product follows its photo's, kept so by triggers like those of 0002.

A photo given another product (the admin's product field, a bulk ``.update(product=...)``, SQL) moves its vector
rows in the same statement's transaction; the BEFORE trigger of 0002 then copies the new product's category and
active flag. An inserted or updated vector row takes its product from its photo, so no writer can set another.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION imageembedding_copy_product() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT i.product_id INTO NEW.product_id FROM catalog_productimage i WHERE i.id = NEW.image_id;
    SELECT p.category_id, p.active INTO NEW.category_id, NEW.active FROM catalog_product p WHERE p.id = NEW.product_id;
    RETURN NEW;
END $$;
DROP TRIGGER imageembedding_copy_product ON search_imageembedding;
CREATE TRIGGER imageembedding_copy_product BEFORE INSERT OR UPDATE OF image_id, product_id, category_id, active
    ON search_imageembedding FOR EACH ROW EXECUTE FUNCTION imageembedding_copy_product();

CREATE FUNCTION productimage_copy_to_imageembeddings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE search_imageembedding SET product_id = NEW.product_id WHERE image_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER productimage_copy_to_imageembeddings AFTER UPDATE OF product_id ON catalog_productimage
    FOR EACH ROW WHEN (OLD.product_id IS DISTINCT FROM NEW.product_id)
    EXECUTE FUNCTION productimage_copy_to_imageembeddings();

UPDATE search_imageembedding e SET product_id = i.product_id
    FROM catalog_productimage i WHERE i.id = e.image_id AND e.product_id <> i.product_id;
"""

BACKWARD = """
DROP TRIGGER productimage_copy_to_imageembeddings ON catalog_productimage;
DROP FUNCTION productimage_copy_to_imageembeddings();
CREATE OR REPLACE FUNCTION imageembedding_copy_product() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT p.category_id, p.active INTO NEW.category_id, NEW.active FROM catalog_product p WHERE p.id = NEW.product_id;
    RETURN NEW;
END $$;
DROP TRIGGER imageembedding_copy_product ON search_imageembedding;
CREATE TRIGGER imageembedding_copy_product BEFORE INSERT OR UPDATE OF product_id, category_id, active
    ON search_imageembedding FOR EACH ROW EXECUTE FUNCTION imageembedding_copy_product();
"""


class Migration(migrations.Migration):
    dependencies = [("search", "0002_denormalised_category_active")]

    operations = [migrations.RunSQL(FORWARD, reverse_sql=BACKWARD)]
