from django.contrib.admin.apps import AdminConfig


class LookalikeAdminConfig(AdminConfig):
    """django.contrib.admin with the site of config/admin_site.py (its login is rate limited)."""

    default_site = "config.admin_site.LookalikeAdminSite"
