"""A shopper refines a photo search in a real browser: category chips, sort, price range and colour swatches, all
without uploading the photo again, each leaving a shareable URL; on a desktop and on a 390 px phone."""

import re

import pytest

pytest.importorskip("playwright", reason="pip install -r requirements-dev.txt")

from playwright.sync_api import expect  # noqa: E402

from tests.browser.pages import card_titles, draw_box, search_by_photo, wait_until_idle

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def everything_matches(settings):
    settings.SEARCH_MIN_SCORE = 0  # the five-product test catalog: let every product count as a match


def _uploads(page) -> list[str]:
    """Records every request that sends a photo (a POST) from now on."""
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    return posts


def test_chips_sort_price_and_colour_refine_without_a_new_upload(page, shop, test_images, screenshot,
                                                                 everything_matches):
    page.goto("/search/photo/")
    search_by_photo(page, test_images / "chair-cafe-pair.jpg")
    chips = page.locator(".looks-like .chip")
    expect(chips).to_have_text([re.compile(r"^Chairs \(2\)"), re.compile(r"^Shoes \(2\)"), re.compile(r"^Tops \(1\)")])
    # The results' own address replaced the POST's: a reload or a shared link shows them again.
    expect(page).to_have_url(re.compile(r"/search/photo/\?query=[\w-]{22}$"))
    # A screen reader hears what came of the search; the live region had kept saying "Searching…".
    expect(page.locator("[data-announce]")).to_have_text(re.compile(r"^\d+ similar products, "))
    posts = _uploads(page)
    steps = page.evaluate("history.length")
    page.get_by_role("button", name="Apply").click()  # nothing changed: the same search, no step for Back
    wait_until_idle(page)
    assert page.evaluate("history.length") == steps

    chips.filter(has_text="Shoes").click()
    wait_until_idle(page)
    expect(page).to_have_url(re.compile(r"\?query=[\w-]{22}&category=[\w-]+$"))
    assert sorted(card_titles(page)) == sorted([shop["RUN-1"].title, shop["RUN-3"].title])
    expect(page.locator(".looks-like .chip[aria-current]")).to_have_text(re.compile("^Shoes"))
    expect(page.locator("[data-query-img]")).to_be_visible()  # the photo stays, as it was never sent again

    page.get_by_label("Sort by").select_option("-price")  # applies at once
    wait_until_idle(page)
    expect(page).to_have_url(re.compile(r"&sort=-price$"))
    assert card_titles(page) == [shop["RUN-3"].title, shop["RUN-1"].title]  # 65.00, then 60.00
    steps = page.evaluate("history.length")
    page.get_by_role("button", name="Apply").click()  # the same search again: no step for Back to go through
    wait_until_idle(page)
    assert page.evaluate("history.length") == steps

    page.get_by_role("link", name="All categories").first.click()
    wait_until_idle(page)
    prices = [float(p.replace("$", "").replace(",", "")) for p in page.locator(".results .price").all_inner_texts()]
    assert len(prices) == 5 and prices == sorted(prices, reverse=True)
    screenshot(page, "browser-refine", readme=True)

    page.locator(".swatch[data-colour=blue]").click()
    wait_until_idle(page)
    expect(page).to_have_url(re.compile(r"&colour=blue$"))
    assert card_titles(page) == [shop["CHAIR-1"].title, shop["TEE-1"].title]  # blue, dearest first

    page.get_by_label("Max price").fill("50")
    page.get_by_role("button", name="Apply").click()
    wait_until_idle(page)
    expect(page).to_have_url(re.compile(r"max_price=50"))
    expect(page).to_have_url(re.compile(r"colour=blue"))
    assert card_titles(page) == [shop["TEE-1"].title]
    assert posts == []  # every refinement was a GET with the query token

    # The URL is shareable: opened afresh it shows the same results, without the photo (never kept).
    url = page.url
    page.goto(url)
    assert card_titles(page) == [shop["TEE-1"].title]
    expect(page.get_by_text("Your earlier photo")).to_be_visible()


def test_look_in_follows_the_results_and_searches_the_kept_search_in_another_category(page, shop, test_images,
                                                                                       everything_matches):
    """A chip refined the results in place and left "Look in" on the category before, where another photo was then
    searched. Opened by their address (a reload, a shared link), results have no photo for the script to send, and
    "Find lookalikes" in another category asked for a photo, where the page without a script searches the kept one."""
    page.goto("/search/photo/")
    search_by_photo(page, test_images / "chair-cafe-pair.jpg")
    page.locator(".looks-like .chip").filter(has_text="Shoes").click()
    wait_until_idle(page)
    look_in = page.get_by_label("Look in")
    expect(look_in).to_have_value(shop["RUN-1"].category.slug)

    page.goto(page.url)
    expect(page.get_by_text("Your earlier photo")).to_be_visible()
    chairs = shop["CHAIR-1"].category.slug
    look_in.select_option(chairs)
    page.get_by_role("button", name="Find lookalikes").click()
    wait_until_idle(page)

    expect(page).to_have_url(re.compile(rf"\?query=[\w-]{{22}}&category={chairs}$"))
    assert sorted(card_titles(page)) == sorted([shop["CHAIR-1"].title, shop["CHAIR-2"].title])
    expect(page.locator("[data-client-error]")).to_be_hidden()


def test_refining_on_a_phone(phone_page, shop, test_images, screenshot, everything_matches):
    page = phone_page
    page.goto("/search/photo/")
    search_by_photo(page, test_images / "chair-cafe-pair.jpg")
    chip = page.locator(".looks-like .chip").filter(has_text="Chairs")
    chip.scroll_into_view_if_needed()
    chip.tap()
    wait_until_idle(page)
    assert sorted(card_titles(page)) == sorted([shop["CHAIR-1"].title, shop["CHAIR-2"].title])
    page.get_by_label("Sort by").select_option("price")
    wait_until_idle(page)
    assert card_titles(page) == [shop["CHAIR-2"].title, shop["CHAIR-1"].title]  # 80.00, then 120.00
    controls = page.locator(".refine-form")
    controls.scroll_into_view_if_needed()
    # Nothing is wider than the phone's screen (no sideways scrolling), controls included.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    box = controls.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    page.locator(".looks-like").scroll_into_view_if_needed()
    screenshot(page, "browser-phone-refine")


def test_a_jump_within_the_page_and_back_keeps_the_results_and_back_between_refinements_loads_them_in_place(
        page, shop, test_images, everything_matches):
    """Every popstate reloaded the page: the skip link's jump to #main, and back from it, reloaded the results
    without the photo the shopper had chosen (the preview gone, no box tool)."""
    page.goto("/search/photo/")
    search_by_photo(page, test_images / "chair-cafe-pair.jpg")
    page.evaluate("window.notReloaded = true")

    page.get_by_role("link", name="Skip to content").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#main$"))
    page.go_back()
    expect(page).not_to_have_url(re.compile(r"#main$"))
    assert page.evaluate("window.notReloaded === true")
    expect(page.locator("[data-query-img]")).to_be_visible()

    page.locator(".looks-like .chip").filter(has_text="Shoes").click()
    wait_until_idle(page)
    shoes = card_titles(page)
    # Back to the unrefined results, and forward again: loaded in place (a reload lost the photo and its box tool)
    page.go_back()
    expect(page).not_to_have_url(re.compile(r"category="))
    wait_until_idle(page)
    expect(page.locator(".results .product-card")).to_have_count(len(shop))
    page.go_forward()
    expect(page).to_have_url(re.compile(r"category="))
    wait_until_idle(page)
    expect(page.locator(".results .product-card")).to_have_count(len(shoes))
    assert page.evaluate("window.notReloaded === true")
    expect(page.locator("[data-query-img]")).to_be_visible()


def test_the_order_chosen_with_the_keyboard_applies_on_enter_not_at_each_arrow(page, shop, test_images,
                                                                               everything_matches):
    """Each arrow key on a closed select is a change in some browsers: the first one ran a search and took the
    focus to the results, so reaching the fourth order took three searches (WCAG 3.2.2)."""
    page.goto("/search/photo/")
    search_by_photo(page, test_images / "chair-cafe-pair.jpg")
    address = page.url
    searched: list[str] = []  # every refinement asked of the server from now on
    page.on("request", lambda request: searched.append(request.url) if "/search/photo/?" in request.url else None)
    sort = page.get_by_label("Sort by")
    sort.focus()
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    expect(sort).to_be_focused()
    assert page.url == address  # nothing applied yet
    chosen = sort.input_value()
    assert chosen == "newest"  # the fourth of four
    page.keyboard.press("Enter")
    wait_until_idle(page)
    expect(page).to_have_url(re.compile(rf"&sort={re.escape(chosen)}$"))
    assert len(searched) == 1 and searched[0].endswith(f"sort={chosen}")  # one search, at Enter, none per arrow


_DROP_A_PHOTO_ON = """([selector, bytes]) => {
    const photo = new File([new Uint8Array(bytes)], "dropped.jpg", { type: "image/jpeg" });
    const transfer = new DataTransfer();
    transfer.items.add(photo);
    const target = document.querySelector(selector);
    for (const type of ["dragover", "drop"]) {
        const event = new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer });
        target.dispatchEvent(event);
        if (type === "drop") return event.defaultPrevented;
    }
}"""


def test_a_photo_dropped_on_the_results_is_chosen_and_the_page_kept(page, shop, test_images, everything_matches):
    """Outside the small drop zone, the browser opened the dropped file in place of the page, results and all."""
    page.goto("/search/photo/")
    search_by_photo(page, test_images / "chair-cafe-pair.jpg")
    photo = list((test_images / "shoe-running-1.jpg").read_bytes())
    assert page.evaluate(_DROP_A_PHOTO_ON, [".results", photo])  # the page takes the drop: no navigation
    expect(page.locator("[data-drop-name]")).to_contain_text("dropped.jpg")
    expect(page.locator("#results-heading")).to_be_visible()


def test_text_pasted_into_a_field_stays_text_though_the_clipboard_holds_a_picture_too(page, shop, test_images):
    """Office and web pages put a picture of the copied text beside it: the page took it as the photo to search."""
    page.goto("/search/photo/")
    photo = list((test_images / "shoe-running-1.jpg").read_bytes())
    pasted = page.evaluate("""([bytes]) => {
        const transfer = new DataTransfer();
        transfer.setData("text/plain", "oak chair");
        transfer.items.add(new File([new Uint8Array(bytes)], "clip.png", { type: "image/png" }));
        const field = document.querySelector("input[name=q]");
        const event = new ClipboardEvent("paste", { bubbles: true, cancelable: true, clipboardData: transfer });
        field.dispatchEvent(event);
        return !event.defaultPrevented;
    }""", [photo])
    assert pasted  # the browser goes on to paste the text
    expect(page.locator("[data-drop-chosen]")).to_be_hidden()


def test_a_refinement_after_the_kept_search_expired_searches_the_photo_again(page, shop, test_images,
                                                                             everything_matches):
    """It asked the shopper to choose the photo again, though the page still held it."""
    from django.core.cache import cache

    page.goto("/search/photo/")
    search_by_photo(page, test_images / "chair-cafe-pair.jpg")
    uploads = _uploads(page)
    cache.clear()  # the kept query vector is gone, as after SEARCH_QUERY_KEEP_SECONDS
    page.locator(".looks-like .chip").filter(has_text="Shoes").click()
    wait_until_idle(page)
    expect(page.locator("[data-request-error]")).to_be_hidden()
    assert len(uploads) == 1  # the photo, sent again
    shoes = {product.title for product in shop.values() if product.category.name == "Shoes"}
    assert card_titles(page) and set(card_titles(page)) <= shoes  # in the category the chip asked for


def _closest_products_shown(page, test_images, settings) -> None:
    """A photo searched when nothing is similar enough, then "Show the closest products anyway"."""
    settings.SEARCH_MIN_SCORE = 0.99
    page.goto("/search/photo/")
    search_by_photo(page, test_images / "chair-cafe-pair.jpg")
    page.get_by_role("link", name="Show the closest products anyway").click()
    wait_until_idle(page)
    expect(page.locator("#results-heading")).to_have_text("Closest products")


def test_the_closest_products_stay_the_closest_when_an_expired_search_is_sent_again(page, shop, test_images,
                                                                                    settings):
    """The photo was sent again without "closest": a chip on the closest products answered "No lookalikes found"."""
    from django.core.cache import cache

    _closest_products_shown(page, test_images, settings)
    uploads = _uploads(page)
    cache.clear()  # the kept query vector is gone, as after SEARCH_QUERY_KEEP_SECONDS
    page.locator(".looks-like .chip").filter(has_text="Shoes").click()
    wait_until_idle(page)
    assert len(uploads) == 1  # the photo, sent again
    expect(page.locator("#results-heading")).to_have_text("Closest products")
    shoes = {product.title for product in shop.values() if product.category.name == "Shoes"}
    assert card_titles(page) and set(card_titles(page)) <= shoes


def test_a_refinement_over_the_search_limit_says_how_long_to_wait(page, shop, test_images, everything_matches,
                                                                  settings):
    """It said "That search could not be run. Please try again.", which failed again at once."""
    from django.core.cache import cache

    page.goto("/search/photo/")
    search_by_photo(page, test_images / "chair-cafe-pair.jpg")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"refine": "1/min"}}
    cache.delete("throttle_refine_127.0.0.1")
    page.locator(".looks-like .chip").filter(has_text="Shoes").click()  # the first of the minute: answered
    wait_until_idle(page)
    expect(page.locator("[data-request-error]")).to_be_hidden()
    page.locator(".looks-like .chip").first.click()
    wait_until_idle(page)
    expect(page.locator("[data-request-error]")).to_contain_text("Please wait")
    expect(page.locator("[data-request-error]")).to_contain_text("second")


def test_a_first_search_over_the_limit_puts_the_focus_on_the_message(page, shop, test_images, settings):
    """The button that had the focus went with the old form, and no field was in error: the focus fell to the page."""
    from django.core.cache import cache

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"search": "1/min"}}
    cache.delete("throttle_search_127.0.0.1")
    page.goto("/search/photo/")
    search_by_photo(page, test_images / "chair-cafe-pair.jpg")
    page.goto("/search/photo/")
    page.locator("#id_photo").set_input_files(str(test_images / "chair-cafe-pair.jpg"))
    page.get_by_role("button", name="Find lookalikes").click()
    expect(page.locator("[data-throttled]")).to_be_visible()
    focused = page.locator(":focus")
    expect(focused).to_contain_text("Please wait")


def test_a_box_searched_on_the_closest_products_keeps_them_the_closest(page, shop, test_images, settings):
    """The new search of the same photo carried the price, order and colour, not "closest": nothing similar enough
    again, though the shopper had asked for the closest."""
    _closest_products_shown(page, test_images, settings)
    draw_box(page, 0.1, 0.1, 0.9, 0.9)
    page.get_by_role("button", name="Search this area").click()
    expect(page.get_by_text("Searched the boxed area")).to_be_visible()
    wait_until_idle(page)
    expect(page.locator("#results-heading")).to_have_text("Closest products")
    assert card_titles(page)


def test_the_closest_products_sorted_refine_in_place_without_a_script_error(page, shop, test_images, settings):
    """The refine form of the closest products has a field named "closest", which hid the form's own closest():
    the script's submit handlers threw, and the browser sent the form itself, reloading the page without the photo
    (the `page` fixture fails on the script error)."""
    _closest_products_shown(page, test_images, settings)
    page.evaluate("window.notReloaded = true")
    page.get_by_label("Sort by").select_option("price")
    wait_until_idle(page)
    expect(page).to_have_url(re.compile(r"sort=price"))
    assert page.evaluate("window.notReloaded === true")
    expect(page.locator("[data-query-img]")).to_be_visible()
