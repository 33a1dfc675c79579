"""A category may not become its own ancestor, whatever writes it: the model's clean() says so on forms; these
triggers refuse it for every other path (bulk updates, raw SQL, two transactions racing each other).

The row trigger walks up from the new parent. A statement that moves categories first takes one transaction-level
advisory lock, before it locks any row: two concurrent moves (A under B, B under A) then run one after the other,
and the second one's walk (a fresh snapshot per statement under READ COMMITTED) sees the first and refuses.
Taking it before the rows matters: each move's deferred foreign-key check locks the other's new parent, so a
lock taken after the row locks could deadlock. Category moves are rare; the lock costs nothing elsewhere.
"""

from django.db import migrations

LOCK_KEY = 7_362_113  # any constant: only this trigger takes it

FORWARD = f"""
CREATE FUNCTION catalog_category_lock_tree() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({LOCK_KEY});
    RETURN NULL;
END;
$$;

CREATE FUNCTION catalog_category_refuse_cycle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.parent_id IS NULL THEN
        RETURN NULL;
    END IF;
    IF EXISTS (
        WITH RECURSIVE up(id) AS (
            SELECT NEW.parent_id
            UNION
            SELECT c.parent_id FROM catalog_category c JOIN up ON c.id = up.id
            WHERE c.parent_id IS NOT NULL AND up.id <> NEW.id
        )
        SELECT 1 FROM up WHERE id = NEW.id
    ) THEN
        RAISE EXCEPTION 'category % cannot be placed under category %: that is itself or one of its subcategories',
            NEW.id, NEW.parent_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'category_no_cycle';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER category_moves_one_at_a_time
    BEFORE UPDATE OF parent_id ON catalog_category
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_category_lock_tree();

-- AFTER, so a statement that moves several categories at once is checked with all of its rows in place.
CREATE TRIGGER category_no_cycle
    AFTER INSERT OR UPDATE OF parent_id ON catalog_category
    FOR EACH ROW EXECUTE FUNCTION catalog_category_refuse_cycle();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS category_no_cycle ON catalog_category;
DROP TRIGGER IF EXISTS category_moves_one_at_a_time ON catalog_category;
DROP FUNCTION IF EXISTS catalog_category_refuse_cycle();
DROP FUNCTION IF EXISTS catalog_category_lock_tree();
"""


class Migration(migrations.Migration):

    dependencies = [
        ("catalog", "0004_product_sku_no_slash"),
    ]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
