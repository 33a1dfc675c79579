from django.apps import AppConfig


class SearchConfig(AppConfig):
    name = "search"
    verbose_name = "Image search"

    def ready(self):
        from django.core.checks import register

        from search.checks import embedding_settings_check
        from search.handlers import connect

        connect()
        register(embedding_settings_check)
