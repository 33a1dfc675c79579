"""Search by photo. The query photo is never stored: it lives in memory (or Django's temporary upload file)
for the one request, and goes back to the browser as a small inline preview the results page can show."""

from __future__ import annotations

import base64
import io
import logging
from collections import Counter
from dataclasses import dataclass

from urllib.parse import urlencode

from django.conf import settings
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods
from PIL import Image

from catalog.categories import CategoryPaths, UnknownCategory, category_by_slug
from catalog.selectors import kept_product_currencies
from search.colours import SWATCHES
from search.forms import MAX_RESULTS, RESULTS_PER_PAGE, PhotoSearchForm, RefineForm
from search.preprocessing import to_rgb, upright
from search.query import PREVIEW_MAX_SIDE, InvalidBox, QueryImage
from search.refine import PRICE_SORTS, SORT_NOTES
from search.kept_queries import KEPT_QUERY_TOKEN, query_vector_keep, query_vector_kept
from search.selectors import PhotoSearch, photo_search
from search.throttles import RefineAnonThrottle, SearchAnonThrottle

logger = logging.getLogger(__name__)

TEMPLATE = "search/photo.html"


@dataclass(frozen=True)
class QueryPhoto:
    data_uri: str
    width: int  # the upright original's size: box coordinates are measured in these pixels
    height: int
    box_style: str = ""  # CSS placing the searched region over the preview, in percent
    box_text: str = ""  # the searched region as the form's "x0,y0,x1,y1"


@require_http_methods(["GET", "HEAD", "POST"])
def photo(request):
    if request.method != "POST":
        if request.GET.get("query"):  # "?query=" alone names no search: the page to start one
            return _refined(request)
        form = PhotoSearchForm(initial={"category": request.GET.get("category", "")})
        return _render(request, {"form": form})

    if not request.FILES and KEPT_QUERY_TOKEN.fullmatch(request.POST.get("query", "")):
        # "Look in" changed under the results, without a script (which sends the photo again): the kept query of
        # the photo on screen, in that category (its price, order and colour start afresh, as for a new photo).
        category = request.POST.get("category", "")
        return redirect(reverse("search:photo") + "?" + urlencode(
            [("query", request.POST["query"])] + ([("category", category)] if category else [])))
    if throttled := _throttled(request):  # before the form decodes the photo
        return throttled
    form = PhotoSearchForm(request.POST, request.FILES)
    if not form.is_valid():
        return _render(request, {"form": form}, status=400)
    data = form.cleaned_data
    # A search of the same photo from its results page (a box, the whole photo) keeps their price, order, colour.
    refine_form = RefineForm(request.POST, auto_id="refine_%s")
    try:
        search = photo_search(image=form.query_image, category=data["category"], limit=data["limit"], box=data["box"],
                              threshold=0 if data["closest"] else None, refine=refine_form.refine())
        token = query_vector_keep(model=search.model, vector=search.vector, query_details=search.details)
        query_photo = _query_photo(form.query_image, data["photo"], box=data["box"])
    except InvalidBox as error:  # the form checks boxes already; this keeps a missed case a form error too
        form.add_error("box", f"The selected area is not usable: {error}. Draw the box again.")
        return _render(request, {"form": form}, status=400)
    except Exception:  # model files missing, database down: say so kindly instead of a bare 500
        logger.exception("photo search failed")
        return _render(request, {"form": _form_again(request), "unavailable": True}, status=503)

    return _results(request, search, token=token, limit=data["limit"], refine_form=refine_form,
                    query_photo=query_photo, closest=data["closest"])


def _form_again(request) -> PhotoSearchForm:
    """The start form for another try after a search could not be run: the category the shopper chose kept."""
    return PhotoSearchForm(initial={"category": request.POST.get("category") or request.GET.get("category", "")})


def _throttled(request, throttle_class=SearchAnonThrottle):
    """The 429 page when this shopper is over the API's limit on photo searches, or on refinements (the same
    counters), else None."""
    throttle = throttle_class()
    if throttle.allow_request(request, None):
        return None
    wait = throttle.retry_after()
    response = _render(request, {"form": _form_again(request), "throttled": wait}, status=429)
    response["Retry-After"] = str(wait)
    return response


def _refined(request):
    """A search refined by its kept query vector (a chip, a price range, an order, "show more"): no photo. It
    searches the catalog again, so it counts against the refinements' limit, as the API's search by a token does."""
    if throttled := _throttled(request, RefineAnonThrottle):
        return throttled
    kept = query_vector_kept(token=request.GET["query"])
    if kept is None:
        return _render(request, {"form": _form_again(request), "expired": True}, status=410)
    refine_form = RefineForm(request.GET, auto_id="refine_%s")
    try:
        category = category_by_slug(slug=request.GET["category"]) if request.GET.get("category") else None
    except UnknownCategory:
        category = None  # deleted since the chip was drawn: the whole catalog, as an old link can only ask
    limit = _limit(request.GET.get("limit"))
    # The empty state's way out: the nearest products whatever their score, each still showing its own match.
    closest = request.GET.get("closest") == "1"
    try:
        search = photo_search(kept=kept, category=category, limit=limit, threshold=0 if closest else None,
                              refine=refine_form.refine())
    except Exception:
        logger.exception("refined photo search failed")
        return _render(request, {"form": _form_again(request), "unavailable": True}, status=503)
    return _results(
        request, search, token=request.GET["query"], limit=limit, refine_form=refine_form, query_photo=None,
        closest=closest,
    )


def _limit(text: str | None) -> int:
    try:
        return min(MAX_RESULTS, max(1, int(text or RESULTS_PER_PAGE)))
    except ValueError:
        return RESULTS_PER_PAGE


def _sort_note(refine, refine_form: RefineForm) -> str:
    """How the results page says the order it shows; an order by price in a shop of several currencies names the
    one listed first."""
    note = SORT_NOTES[refine.sort]
    if refine.sort in PRICE_SORTS and len(kept_product_currencies()) > 1:
        note += f", {refine_form.price_currency()} prices first"
    return note


def _results(request, search: PhotoSearch, *, token: str | None, limit: int, refine_form: RefineForm, query_photo,
             closest: bool = False):
    category_slug = search.category.slug if search.category else ""
    context = {
        # A fresh form for "try another photo", keeping the chosen category.
        "form": PhotoSearchForm(initial={"category": category_slug}),
        "search": search,
        "query_photo": query_photo,
        "token": token,
        "sort_note": _sort_note(search.refine, refine_form),
        "closest": closest,
        "limit": limit,
    }
    if token is None:  # the cache that keeps query vectors is down: the results stand, nothing can refine them
        return _render(request, context)
    refine_items = refine_form.query_items()

    def scoped(category: str, *, closest: bool = closest) -> list[tuple[str, str]]:
        """What every refinement keeps: the query, its mode ("closest" or not) and its category."""
        items = [("query", token)] + ([("closest", "1")] if closest else [])
        return items + ([("category", category)] if category else [])

    def url(category: str, *, more: bool = False, closest: bool = closest) -> str:
        # Every control's link: shareable while the token lives.
        items = scoped(category, closest=closest) + refine_items
        items += [("limit", str(min(limit * 2, MAX_RESULTS)))] if more else []
        return reverse("search:photo") + "?" + urlencode(items)

    scope = scoped(category_slug)
    # As many as "Show more" widened the list to, under a new order, price or colour (a chip, another category of
    # matches, starts again): the form dropped it, and a sort of 48 results showed 12.
    shown = [("limit", str(limit))] if limit != RESULTS_PER_PAGE else []

    # Two categories of one name ("Sofas" under Furniture and under Outdoor) are told apart by their paths.
    names = Counter(facet.category.name for facet in search.categories)
    paths = CategoryPaths()
    chips = [
        {"facet": facet, "url": url(facet.category.slug), "current": facet.category.slug == category_slug,
         "label": paths[facet.category.pk] if names[facet.category.name] > 1 else facet.category.name}
        for facet in search.categories
    ]
    without_colour = scope + shown + refine_form.query_items(colour=False)

    def colour_url(colour: str) -> str:
        return reverse("search:photo") + "?" + urlencode(without_colour + ([("colour", colour)] if colour else []))

    swatches = [
        {"facet": facet, "hex": SWATCHES[facet.colour], "url": colour_url(facet.colour),
         "current": facet.colour == search.refine.colour}
        for facet in search.colours
    ]
    return _render(
        request,
        {
            **context,
            "chips": chips,
            "swatches": swatches,
            "any_colour_url": colour_url("") if search.refine.colour else "",
            "any_price_url": (
                reverse("search:photo") + "?" + urlencode(scope + shown + refine_form.query_items(price=False))
                if search.refine.priced else ""
            ),
            # A range in a currency no product is priced in (a typed address): that, not the range, emptied it.
            "unsold_currency": search.refine.currency
            if search.refine.currency and search.refine.currency not in kept_product_currencies() else "",
            "refine_form": refine_form,
            # With nothing found and nothing narrowed, there is nothing to filter: the way out comes first instead.
            "refine_shown": bool(search.results or refine_items),
            "refine_keep": scope + shown,
            "this_url": url(category_slug),
            "all_url": url(""),
            "more_url": url(category_slug, more=True),
            "closest_url": url(category_slug, closest=True),
            "similar_url": url(category_slug, closest=False),
            "has_more": search.more and limit < MAX_RESULTS,
        },
    )


def _render(request, context: dict, *, status: int = 200):
    # The browser checks the size too, so a too-big photo is refused before it is uploaded.
    context["upload_max_bytes"] = settings.UPLOAD_MAX_BYTES
    context["upload_max_mb"] = settings.UPLOAD_MAX_BYTES // (1024 * 1024)
    context["upload_min_side"] = settings.UPLOAD_MIN_SIDE
    return render(request, TEMPLATE, context, status=status)


def _preview_save(preview: Image.Image, buffer: io.BytesIO) -> None:
    preview.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    preview.save(buffer, format="JPEG", quality=82, optimize=True)


def _query_photo(query_image: QueryImage, file, *, box) -> QueryPhoto:
    width, height = query_image.width, query_image.height
    buffer = io.BytesIO()
    if max(query_image.pixels.size) >= PREVIEW_MAX_SIDE or max(query_image.pixels.size) == max(width, height):
        # The pixels the search decoded (every format but a large JPEG's, which it decoded small): a HEIC or PNG
        # of a phone's 12 MP decoded again here cost as much once more.
        _preview_save(query_image.pixels.copy(), buffer)
    else:
        file.seek(0)
        with Image.open(file) as image:
            image.draft("RGB", (PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))  # JPEGs decode straight at reduced size
            _preview_save(to_rgb(upright(image)), buffer)  # (may be ``image`` itself: inside the with)
        file.seek(0)
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
