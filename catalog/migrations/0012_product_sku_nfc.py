"""SKUs are stored in Unicode NFC (catalog.models.sku_normalized), as pages and imports now look them up. A SKU
stored decomposed is written composed, unless its composed form is another product's: that one is left as it was
and named in the migration's output, for an admin to rename."""

import unicodedata

from django.db import migrations

SKU_MAX = 64


def skus_composed(apps, schema_editor):
    Product = apps.get_model("catalog", "Product")
    taken = set(Product.objects.values_list("sku", flat=True))
    # Only non-ASCII SKUs can change: an ASCII string is its own NFC.
    for product in Product.objects.filter(sku__regex=r"[^\x01-\x7f]").only("pk", "sku").iterator():
        composed = unicodedata.normalize("NFC", product.sku)
        if composed == product.sku:
            continue
        if composed in taken or len(composed) > SKU_MAX:
            print(f"\n  SKU {product.sku!r} (product {product.pk}) left as it is: composed, it is another product's "
                  f"or longer than {SKU_MAX} characters")
            continue
        Product.objects.filter(pk=product.pk).update(sku=composed)
        taken.add(composed)


class Migration(migrations.Migration):

    dependencies = [
        ("catalog", "0011_product_active_currency_idx"),
    ]

    operations = [
        migrations.RunPython(skus_composed, migrations.RunPython.noop),
    ]
