"""Search by photo. The query photo is never stored: it lives in memory (or Django's temporary upload file)
for the one request, and goes back to the browser as a small inline preview the results page can show."""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass

from django.conf import settings
from django.shortcuts import render
from django.views.decorators.http import require_http_methods
from PIL import Image, ImageOps

from search.forms import MAX_RESULTS, PhotoSearchForm
from search.preprocessing import to_rgb
from search.query import InvalidBox
from search.selectors import photo_search

logger = logging.getLogger(__name__)

# Big enough for a sharp preview on a phone's screen and for drawing a box on it; small enough to inline.
PREVIEW_MAX_SIDE = 800
TEMPLATE = "search/photo.html"


@dataclass(frozen=True)
class QueryPhoto:
    data_uri: str
    width: int  # the upright original's size: box coordinates are measured in these pixels
    height: int
    box_style: str = ""  # CSS placing the searched region over the preview, in percent
    box_text: str = ""  # the searched region as the form's "x0,y0,x1,y1"


@require_http_methods(["GET", "POST"])
def photo(request):
    if request.method == "GET":
        form = PhotoSearchForm(initial={"category": request.GET.get("category", "")})
        return _render(request, {"form": form})

    form = PhotoSearchForm(request.POST, request.FILES)
    if not form.is_valid():
        return _render(request, {"form": form}, status=400)
    data = form.cleaned_data
    try:
        search = photo_search(image=form.query_image, category=data["category"], limit=data["limit"], box=data["box"])
    except InvalidBox as error:  # the form checks boxes already; this keeps a missed case a form error too
        form.add_error("box", f"The selected area is not usable: {error}. Draw the box again.")
        return _render(request, {"form": form}, status=400)
    except Exception:  # model files missing, database down: say so kindly instead of a bare 500
        logger.exception("photo search failed")
        return _render(request, {"form": PhotoSearchForm(), "unavailable": True}, status=503)

    width, height = form.query_image.width, form.query_image.height
    return _render(
        request,
        {
            # A fresh form for "try another photo", keeping the chosen category.
            "form": PhotoSearchForm(initial={"category": data["category"].slug if data["category"] else ""}),
            "search": search,
            "query_photo": _query_photo(data["photo"], width=width, height=height, box=data["box"]),
            "limit": data["limit"],
            "next_limit": min(data["limit"] * 2, MAX_RESULTS),
            # Fewer results than asked for means nothing else passed the threshold.
            "has_more": len(search.results) >= data["limit"] and data["limit"] < MAX_RESULTS,
        },
    )


def _render(request, context: dict, *, status: int = 200):
    # The browser checks the size too, so a too-big photo is refused before it is uploaded.
    context["upload_max_bytes"] = settings.UPLOAD_MAX_BYTES
    context["upload_max_mb"] = settings.UPLOAD_MAX_BYTES // (1024 * 1024)
    return render(request, TEMPLATE, context, status=status)


def _query_photo(file, *, width: int, height: int, box) -> QueryPhoto:
    file.seek(0)
    with Image.open(file) as image:
        image.draft("RGB", (PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))  # JPEGs decode straight at reduced size
        preview = to_rgb(ImageOps.exif_transpose(image))  # as the model sees it: 16-bit scaled, alpha on white
    file.seek(0)
    preview.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    buffer = io.BytesIO()
    preview.save(buffer, format="JPEG", quality=82, optimize=True)
    box_style = box_text = ""
    if box is not None:
        box_text = ",".join(f"{value:g}" for value in (box.x0, box.y0, box.x1, box.y1))
        box_style = (
            f"left:{100 * box.x0 / width:.3f}%;top:{100 * box.y0 / height:.3f}%;"
            f"width:{100 * (box.x1 - box.x0) / width:.3f}%;height:{100 * (box.y1 - box.y0) / height:.3f}%"
        )
    return QueryPhoto(
        data_uri="data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
        width=width,
        height=height,
        box_style=box_style,
        box_text=box_text,
    )
