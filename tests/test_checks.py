"""search/checks.py: a typo in the embedding settings stops `check` and `migrate` (the web entrypoint) at once,
instead of every embedding task failing and photo search answering 503 behind a healthy /healthz."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from search import embeddings


@pytest.fixture(autouse=True)
def no_model_load(monkeypatch):
    """The checks run in every manage.py command and the web's start: loading the network there would cost each of
    them seconds and hundreds of MB."""

    def refuse(self):
        raise AssertionError("a system check loaded the model")

    monkeypatch.setattr(embeddings.Embedder, "load", refuse)
    monkeypatch.setattr(embeddings.EfficientNetLiteEmbedder, "_load", refuse)


def test_the_shipped_embedding_settings_pass(settings, capsys):
    call_command("check")
    assert "no issues" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("setting", "value", "check_id"),
    [
        ("EMBEDDING_MODEL", "efficientnet-lite9", "search.E001"),
        ("EMBEDDING_RUNTIME", "onnx-int4", "search.E002"),
        ("EMBEDDING_REDUCTION_FILE", "/nowhere/reduction.npz", "search.E003"),
    ],
)
def test_a_typo_in_an_embedding_setting_fails_the_check_naming_it(settings, setting, value, check_id):
    setattr(settings, setting, value)
    with pytest.raises(SystemCheckError) as failed:
        call_command("check")
    message = str(failed.value)
    assert check_id in message and setting in message and value in message


def test_migrate_refuses_to_run_with_an_unknown_model(settings, db):
    """What the web container's entrypoint runs first: it stops there, and the web never reports healthy."""
    settings.EMBEDDING_MODEL = "efficientnet-lite9"
    with pytest.raises(SystemCheckError, match="efficientnet-lite9"):
        call_command("migrate", skip_checks=False, verbosity=0)


def test_an_existing_reduction_file_passes(settings, tmp_path, capsys):
    reduction = tmp_path / "reduction.npz"
    reduction.write_bytes(b"not read by the check")
    settings.EMBEDDING_REDUCTION_FILE = str(reduction)
    call_command("check")
    assert "no issues" in capsys.readouterr().out
