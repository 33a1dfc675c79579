from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("search", "0006_colour_copy")]

    operations = [
        migrations.AddField(
            model_name="imageembedding",
            name="details",
            field=models.BinaryField(editable=False, null=True),
        ),
        # int8 descriptors barely compress: store them out of line without trying (EXTERNAL, not EXTENDED).
        migrations.RunSQL(
            "ALTER TABLE search_imageembedding ALTER COLUMN details SET STORAGE EXTERNAL",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
