"""System checks of the embedding settings.

The model and its runtime are read only when the first photo is embedded or searched: without these checks a typo in
EMBEDDING_MODEL, EMBEDDING_RUNTIME or EMBEDDING_REDUCTION_FILE let the web migrate and report healthy while every
embedding task failed, photos stayed pending and photo search answered 503. ``check`` and ``migrate`` (the web
container's entrypoint runs it first) now stop with the setting's name. Nothing here loads the model: the checks run
in every management command.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.checks import Error


def embedding_settings_check(app_configs=None, **kwargs) -> list[Error]:
    from search.embeddings import EMBEDDERS, RUNTIMES

    errors = []
    model = settings.EMBEDDING_MODEL
    if model not in EMBEDDERS:
        errors.append(Error(f"EMBEDDING_MODEL {model!r} is not a known embedding model.",
                            hint=f"Choose one of {', '.join(sorted(EMBEDDERS))}.", id="search.E001"))
    runtime = settings.EMBEDDING_RUNTIME
    if runtime not in RUNTIMES:
        errors.append(Error(f"EMBEDDING_RUNTIME {runtime!r} is not a known embedding runtime.",
                            hint=f"Choose one of {', '.join(RUNTIMES)}.", id="search.E002"))
    reduction = settings.EMBEDDING_REDUCTION_FILE
    if reduction and not Path(reduction).is_file():
        errors.append(Error(f"EMBEDDING_REDUCTION_FILE {reduction!r} is not a file.",
                            hint="Give the path of a reduction saved by `python -m bench.fit_reduction --save-to`, "
                                 "or leave it empty for the shipped one.", id="search.E003"))
    return errors
