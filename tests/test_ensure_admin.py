"""`manage.py ensure_admin`, which `bin/lookalike run` calls: the local admin account and its password."""

import io
import stat

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    from catalog.management.commands import ensure_admin

    monkeypatch.setattr(ensure_admin, "STATE_DIR", tmp_path)
    return tmp_path


def _said(**options) -> str:
    out = io.StringIO()
    call_command("ensure_admin", stdout=out, **options)
    return out.getvalue()


def test_the_admin_is_created_once_and_its_password_printed_only_while_it_holds(state_dir):
    first = _said()
    password = first.split("password: ")[1].strip()
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert stat.S_IMODE((state_dir / "admin-password").stat().st_mode) == 0o600
    assert _said() == first  # the same account, the same words

    user = get_user_model().objects.get(username="admin")
    user.set_password("changed in the admin")
    user.save()
    assert "password: (the password you set)" in _said()  # not the old one, which no longer works


def test_another_accounts_password_is_never_printed_for_it(state_dir):
    admin_password = _said().split("password: ")[1].strip()
    get_user_model().objects.create_user("bob", password="bob's own", is_staff=True)
    said = _said(username="bob")
    assert admin_password not in said and "password: (the password you set)" in said


@pytest.mark.parametrize("account", [{}, {"is_staff": True, "is_active": False}], ids=["shopper", "inactive"])
def test_an_account_that_cannot_open_the_admin_is_not_printed_as_its_login(state_dir, account):
    """An ordinary account was printed as "Admin: /admin/ user: shopper": the admin then refused it."""
    from django.core.management.base import CommandError

    get_user_model().objects.create_user("shopper", password="theirs", **account)
    with pytest.raises(CommandError, match="'shopper' is an account that cannot open the admin"):
        _said(username="shopper")


@pytest.mark.parametrize("username", ["", "a/b", "..", "x" * 151])  # the last: a database error, a traceback
def test_a_username_that_cannot_name_its_password_file_is_refused_before_the_account_is_made(state_dir, username):
    """"a/b" made the superuser, then failed writing its password file: later runs printed a password nobody knew."""
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="cannot name an account .*and its password file"):
        call_command("ensure_admin", username=username)
    assert not get_user_model().objects.exists()


def test_an_account_whose_password_cannot_be_kept_is_not_made(state_dir):
    """A name of 150 two-byte letters passed the checks, then its file name was too long: the superuser stayed, its
    password lost."""
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no account was made"):
        call_command("ensure_admin", username="é" * 150)
    assert not get_user_model().objects.exists()
