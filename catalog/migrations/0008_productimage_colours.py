import django.contrib.postgres.fields
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("catalog", "0007_search_words")]

    operations = [
        migrations.AddField(
            model_name="productimage",
            name="colours",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.CharField(max_length=12), blank=True, editable=False, null=True, size=None
            ),
        ),
        migrations.AddIndex(
            model_name="productimage",
            index=models.Index(
                condition=models.Q(("colours__isnull", True)), fields=["id"], name="productimage_no_colours_idx"
            ),
        ),
    ]
