from django.apps import AppConfig


class SearchConfig(AppConfig):
    name = "search"
    verbose_name = "Image search"

    def ready(self):
        from search.handlers import connect

        connect()
