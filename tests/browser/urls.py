"""The site's URLs plus uploaded media, for browser tests only.

config.urls serves media only when DEBUG was on at import time, and tests run with DEBUG off. The view reads
MEDIA_ROOT per request because every test gets its own temporary MEDIA_ROOT.
"""

from django.conf import settings
from django.urls import re_path
from django.views.static import serve

from config.urls import urlpatterns as site_urlpatterns


def media(request, path):
    return serve(request, path, document_root=settings.MEDIA_ROOT)


urlpatterns = [re_path(r"^media/(?P<path>.*)$", media), *site_urlpatterns]
