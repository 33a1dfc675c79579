from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"
    verbose_name = "Catalog"

    def ready(self):
        # Phones save HEIC; teach Pillow to decode it in every process (web, worker, commands).
        from pillow_heif import register_heif_opener

        register_heif_opener()

        from catalog.page_cache import connect_signals

        connect_signals()
