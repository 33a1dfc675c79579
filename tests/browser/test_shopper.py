"""A shopper in a real browser: search by photo, box a region, More like this, category filter, empty states."""

import re

import pytest

pytest.importorskip("playwright", reason="pip install -r requirements-dev.txt")

from playwright.sync_api import expect  # noqa: E402

from tests.browser.pages import card_titles, draw_box, search_by_photo, wait_until_idle
from tests.factories import collage

pytestmark = [pytest.mark.system, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_upload_a_photo_see_lookalikes_then_more_like_this(page, shop, test_images, screenshot):
    page.goto("/")
    screenshot(page, "home")
    page.get_by_role("link", name="Search by photo").first.click()
    expect(page.get_by_role("heading", name="Search by photo")).to_be_visible()

    search_by_photo(page, test_images / "shoe-running-3.jpg")
    expect(page.locator("#results-heading")).to_have_text("Lookalikes")
    titles = card_titles(page)
    assert titles[0] == shop["RUN-3"].title  # the very same photo is the best match
    badges = page.locator(".results .match-badge").all_inner_texts()
    assert len(badges) == len(titles) and all(re.fullmatch(r"\d+% match", badge) for badge in badges)
    scores = [int(badge.split("%")[0]) for badge in badges]
    assert scores == sorted(scores, reverse=True) and scores[0] >= 99
    # The card's photo is served from media and really loads.
    first_photo = page.locator(".results .product-card img").first
    expect(first_photo).to_have_attribute("src", re.compile(r"^/media/"))
    assert first_photo.evaluate("img => img.complete && img.naturalWidth > 0")
    # A screen reader names the card by its text once, not the photo's title and then the title again.
    title = re.escape(shop["RUN-3"].title)
    card = page.locator(".results .product-card-link").first
    expect(card).to_have_accessible_name(re.compile(rf"^(?!(.*{title}){{2}}).*{title}"))
    screenshot(page, "browser-search-results")

    page.locator(".results .product-card-link", has_text=shop["RUN-3"].title).click()
    expect(page).to_have_url(re.compile(r"/p/RUN-3/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(shop["RUN-3"].title)
    page.get_by_role("link", name="More like this").click()
    expect(page).to_have_url(re.compile(r"#more-like-this$"))
    section = page.locator("#more-like-this")
    expect(section.get_by_role("heading", name="More like this")).to_be_in_viewport()
    wait_until_idle(page)
    # In the product's own category (Shoes): the other running shoe, never the product itself.
    expect(section.locator(".product-card-title")).to_have_text([shop["RUN-1"].title])
    expect(section.locator(".match-badge")).to_have_text(re.compile(r"\d+% match"))
    screenshot(page, "browser-more-like-this", readme=True)

    # "All categories" widens More like this to every other product, still without the product itself.
    section.get_by_role("link", name="All categories").click()
    expect(page).to_have_url(re.compile(r"\?scope=all#more-like-this$"))
    expect(page.locator("#more-like-this .product-card")).to_have_count(len(shop) - 1)
    anywhere = {title.strip() for title in page.locator("#more-like-this .product-card-title").all_inner_texts()}
    assert anywhere == {product.title for sku, product in shop.items() if sku != "RUN-3"}


def test_draw_a_box_around_one_thing_and_search_again(page, shop, test_images, tmp_path, screenshot):
    photo = tmp_path / "chair-and-shirt.jpg"
    collage(test_images).save(photo, quality=90)  # a chair on the left half, a T-shirt on the right
    page.goto("/search/photo/")
    search_by_photo(page, photo)
    expect(page.get_by_text("Your photo", exact=True)).to_be_visible()
    search_area = page.get_by_role("button", name="Search this area")
    expect(search_area).to_be_disabled()  # nothing drawn yet
    page.get_by_label("Sort by").select_option("-price")  # a refinement in force, which the boxed search keeps
    wait_until_idle(page)

    # Drag from the top-left of the T-shirt half to the bottom-right corner of the photo.
    draw_box(page, 0.52, 0.02, 0.99, 0.98)
    expect(page.locator("[data-region-box]")).to_be_visible()
    expect(search_area).to_be_enabled()
    search_area.click()

    expect(page.get_by_text("Searched the boxed area")).to_be_visible()
    wait_until_idle(page)
    assert card_titles(page)[0] == shop["TEE-1"].title
    # The box the server searched is in the photo's own pixels: the right half of the 1000x500 collage.
    x0, y0, x1, y1 = map(float, page.locator("[data-photo-search-body]").get_attribute("data-box").split(","))
    assert 500 <= x0 <= 530 and y0 <= 20 and x1 >= 980 and y1 >= 480
    expect(page.locator("[data-region-box]")).to_be_visible()  # the searched box stays drawn
    expect(page.get_by_label("Sort by")).to_have_value("-price")
    screenshot(page, "browser-search-region", readme=True)

    boxed = page.url
    page.get_by_role("button", name="Whole photo").click()
    expect(page.get_by_text("Searched the boxed area")).to_be_hidden()
    wait_until_idle(page)
    assert page.locator("[data-photo-search-body]").get_attribute("data-box") == ""
    expect(page.get_by_label("Sort by")).to_have_value("-price")
    # Back returns to the boxed search's results, where it left the search for the page before it, and the photo
    # stays, with the box it searched (a reload lost it: "Your earlier photo").
    assert page.url != boxed
    page.go_back()
    expect(page).to_have_url(boxed)
    wait_until_idle(page)
    assert card_titles(page)[0] == shop["TEE-1"].title
    expect(page.locator("[data-query-img]")).to_be_visible()
    expect(page.get_by_text("Searched the boxed area")).to_be_visible()
    expect(page.locator("[data-region-box]")).to_be_visible()
    page.go_back()  # the whole photo's results, sorted, as they were before the box
    wait_until_idle(page)
    expect(page.get_by_text("Your photo", exact=True)).to_be_visible()
    expect(page.locator("[data-region-box]")).to_be_hidden()
    expect(page.get_by_label("Sort by")).to_have_value("-price")


def test_a_box_on_results_opened_afresh_searches_the_pages_own_preview_of_the_photo(page, shop, test_images, tmp_path):
    """Results the browser posted for itself (the form sent before the script took it over) have no photo in the
    script's memory: a box drawn on them searches the page's preview of the photo (a data: URL), which the security
    policy must let the script read."""
    photo = tmp_path / "chair-and-shirt.jpg"
    collage(test_images).save(photo, quality=90)
    page.goto("/search/photo/")
    page.locator("#id_photo").set_input_files(str(photo))
    with page.expect_navigation():
        page.evaluate("document.querySelector('#id_photo').form.submit()")  # the browser's own post, no script
    expect(page.locator("[data-query-img]")).to_be_visible()
    wait_until_idle(page)

    draw_box(page, 0.52, 0.02, 0.99, 0.98)
    page.get_by_role("button", name="Search this area").click()
    expect(page.get_by_text("Searched the boxed area")).to_be_visible()
    wait_until_idle(page)
    assert card_titles(page)[0] == shop["TEE-1"].title


def test_category_filter_keeps_only_that_category(page, shop, test_images, settings, screenshot):
    # Five products have little in common above the shop's cut-off: pin it at 0 so that the photo of two cafe chairs
    # (not in the catalog) finds chairs and shoes, and the filter has something to take away.
    settings.SEARCH_MIN_SCORE = 0.0
    chairs = shop["CHAIR-1"].category
    page.goto("/search/photo/")
    search_by_photo(page, test_images / "chair-cafe-pair.jpg")
    everywhere = page.locator(".results .product-card-category").all_inner_texts()
    assert {chairs.name, "Shoes"} <= set(everywhere)

    page.goto("/search/photo/")
    search_by_photo(page, test_images / "chair-cafe-pair.jpg", category_slug=chairs.slug)
    expect(page.locator(".results-head")).to_contain_text(f"in {chairs.name}")
    in_chairs = page.locator(".results .product-card-category").all_inner_texts()
    assert in_chairs and set(in_chairs) == {chairs.name}
    assert sorted(card_titles(page)) == sorted([shop["CHAIR-1"].title, shop["CHAIR-2"].title])
    screenshot(page, "browser-search-category", readme=True)

    # "All categories" searches the same photo again without the filter, no new upload needed.
    page.locator(".results-head").get_by_role("link", name="All categories").click()
    expect(page.locator(".results-head")).not_to_contain_text(f"in {chairs.name}")
    wait_until_idle(page)
    assert page.locator(".results .product-card-category").all_inner_texts() == everywhere


def test_empty_states_when_nothing_is_similar_enough(page, shop, test_images, settings, screenshot):
    settings.SEARCH_MIN_SCORE = 0.99  # the live server runs in this process, so it sees the override
    chairs = shop["CHAIR-1"].category
    page.goto("/search/photo/")
    search_by_photo(page, test_images / "plant-cactus.jpg")
    expect(page.locator("#results-heading")).to_have_text("No lookalikes found")
    expect(page.get_by_role("heading", name="Nothing similar enough in our catalog")).to_be_visible()
    expect(page.get_by_role("link", name="Browse categories")).to_be_visible()
    expect(page.locator(".results .product-card")).to_have_count(0)
    screenshot(page, "browser-nothing-similar")
    # One click shows the nearest products anyway, in place: the photo stays, every card says its own low match.
    page.get_by_role("link", name="Show the closest products anyway").click()
    expect(page.locator("#results-heading")).to_have_text("Closest products")
    expect(page.locator("[data-closest-note]")).to_be_visible()
    expect(page.locator(".results .product-card")).to_have_count(len(shop))
    expect(page.locator("[data-query-img]")).to_be_visible()
    assert "closest=1" in page.url
    screenshot(page, "browser-closest", readme=True)
    page.get_by_role("link", name="Only similar enough").click()
    expect(page.get_by_role("heading", name="Nothing similar enough in our catalog")).to_be_visible()

    page.goto("/search/photo/")
    search_by_photo(page, test_images / "plant-cactus.jpg", category_slug=chairs.slug)
    expect(page.get_by_role("heading", name=f"No similar products in {chairs.name}")).to_be_visible()
    page.get_by_role("link", name="Search all categories").click()
    expect(page.get_by_role("heading", name="Nothing similar enough in our catalog")).to_be_visible()


def test_a_file_that_is_not_a_photo_gets_a_message_not_an_error_page(page, tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("not really a JPEG")
    page.goto("/search/photo/")
    page.locator("#id_photo").set_input_files(str(fake))
    page.get_by_role("button", name="Find lookalikes").click()
    expect(page.locator("[data-field-error]")).to_have_text(re.compile(r"\w"))  # a message, shown by the photo
    expect(page.get_by_role("heading", name="Search by photo")).to_be_visible()
    expect(page.locator("#results-heading")).to_have_count(0)
    # The focus is on the photo field, whose description is the message: a screen reader says what was wrong.
    expect(page.locator("#id_photo")).to_be_focused()
    expect(page.locator("#id_photo")).to_have_attribute("aria-describedby", re.compile(r"\bphoto-error\b"))


def test_phone_upload_and_results(phone_page, shop, test_images, screenshot):
    page = phone_page
    page.goto("/search/photo/")
    expect(page.get_by_text("Choose a photo")).to_be_visible()  # touch screens get words, not "drop a photo"
    search_by_photo(page, test_images / "shoe-running-3.jpg")
    # The page comes to the results, under the shopper's photo: the heading is on screen without scrolling.
    expect(page.locator("#results-heading")).to_be_in_viewport()
    first = page.locator(".results .product-card").first
    first.scroll_into_view_if_needed()
    expect(first).to_be_in_viewport()
    wait_until_idle(page)
    expect(first.locator(".product-card-title")).to_have_text(shop["RUN-3"].title)
    expect(first.locator(".match-badge")).to_have_text(re.compile(r"\d+% match"))
    # Nothing is wider than the phone's screen (no sideways scrolling).
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "browser-phone-results", readme=True)


def test_a_phone_scrolling_smoothly_comes_to_the_results_top(smooth_phone_page, shop, test_images):
    """The smooth scroll began before the photo above the results was drawn, and stopped short by its height: the
    heading 216 px down the screen, under the photo's lower half."""
    page = smooth_phone_page
    page.goto("/search/photo/")
    search_by_photo(page, test_images / "shoe-running-3.jpg")
    heading = page.locator("#results-heading")
    for _ in range(50):  # the scroll's end: where it stops
        if abs(heading.bounding_box()["y"]) < 40:
            break
        page.wait_for_timeout(100)
    assert abs(heading.bounding_box()["y"]) < 40, heading.bounding_box()


def test_a_product_with_many_photos_fits_a_phone(phone_page, shop):
    """From five photos on, the row of thumbnails widened the page: it scrolled sideways, the photo cut off."""
    from catalog.services import product_image_add
    from tests.factories import uploaded_image

    product = shop["CHAIR-1"]
    for n in range(7):
        product_image_add(product=product, file=uploaded_image(f"{n}.jpg", color=(30 * n, 90, 160)))
    page = phone_page
    page.goto(product.get_absolute_url())
    expect(page.locator(".gallery-thumb")).to_have_count(8)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    thumbs = page.locator(".gallery-thumbs").bounding_box()
    assert thumbs["x"] >= 0 and thumbs["x"] + thumbs["width"] <= 390  # the row scrolls within itself


def test_back_from_a_sorted_category_shows_the_order_of_the_list(page, shop):
    """The select still said "Newest first" beside the list in name order, and choosing it again did nothing."""
    category = shop["CHAIR-1"].category.get_absolute_url()
    page.goto(category)
    sort = page.get_by_label("Sort by")
    with page.expect_navigation():
        sort.select_option("newest")
    expect(page).to_have_url(re.compile(r"sort=newest"))
    page.go_back()
    expect(page).not_to_have_url(re.compile(r"sort="))
    expect(page.get_by_label("Sort by")).to_have_value("title")
    with page.expect_navigation():
        page.get_by_label("Sort by").select_option("newest")
    expect(page).to_have_url(re.compile(r"sort=newest"))


def test_the_keyboards_focus_is_drawn_on_selects_and_fields(page, shop):
    """"Look in" and the header's search showed the focus as a 1 px border's colour and a faint ring (1.1:1 on
    white), where every other control has the site's 3 px outline."""
    page.goto("/search/photo/")
    for label in ("Look in", "Search products"):
        field = page.get_by_label(label)
        for _ in range(40):
            page.keyboard.press("Tab")
            if field.evaluate("el => el === document.activeElement"):
                break
        assert field.evaluate("el => getComputedStyle(el).outlineStyle") == "solid", label
        assert field.evaluate("el => parseFloat(getComputedStyle(el).outlineWidth)") >= 3, label


def test_a_photo_chosen_before_the_pages_script_ran_is_shown(page, shop, test_images):
    held = []
    # The page's script is slow to arrive, as on a poor connection: held until the shopper has chosen a photo.
    page.route("**/photo-search*.js", lambda route: held.append(route))
    page.goto("/search/photo/", wait_until="commit")
    page.locator("#id_photo").set_input_files(str(test_images / "shoe-running-3.jpg"))
    page.wait_for_function("() => document.querySelector('#id_photo').files.length === 1")
    expect(page.locator("[data-drop-name]")).to_have_text("")  # nothing has run yet
    assert held, "the page asked for its script"
    held[0].continue_()
    expect(page.locator("[data-drop-name]")).to_contain_text("shoe-running-3.jpg")
    page.get_by_role("button", name="Find lookalikes").click()
    expect(page.locator("#results-heading")).to_have_text("Lookalikes")


def test_without_javascript_the_chosen_photo_shows_and_the_search_runs(browser, site, shop, test_images):
    """The photo field lies invisible over the drop zone, and only the page's script showed the photo chosen:
    without it, choosing a photo changed nothing on the screen."""
    context = browser.new_context(java_script_enabled=False, base_url=site)
    page = context.new_page()
    try:
        page.goto("/search/photo/")
        field = page.locator("#id_photo")
        assert field.evaluate("input => getComputedStyle(input).opacity") == "1"
        expect(page.get_by_text("Take a photo", exact=True)).to_be_hidden()  # it could not show the photo taken either
        field.set_input_files(str(test_images / "shoe-running-3.jpg"))
        page.get_by_role("button", name="Find lookalikes").click()
        expect(page.locator("#results-heading")).to_have_text("Lookalikes")
        assert card_titles(page)[0] == shop["RUN-3"].title

        # Another category under the results, no new photo: the same photo searched there (it asked for a photo,
        # and the results were gone).
        page.get_by_label("Look in").select_option("clothing")
        page.get_by_role("button", name="Find lookalikes").click()
        expect(page.locator("#results-heading")).to_have_text("Lookalikes")
        assert "category=clothing" in page.url
        assert card_titles(page)[0] == shop["RUN-3"].title
    finally:
        context.close()


def test_a_box_drawn_with_the_keyboard(page, shop, test_images, tmp_path, screenshot):
    """Boxing a part of the photo took a mouse or a finger: the photo is now a stop of its own for the keyboard,
    where the arrow keys move a box and Shift with them resizes it."""
    photo = tmp_path / "chair-and-shirt.jpg"
    collage(test_images).save(photo, quality=90)  # a chair on the left half, a T-shirt on the right
    page.goto("/search/photo/")
    search_by_photo(page, photo)
    frame = page.locator("[data-region]")
    keys = page.locator("#region-keys")
    expect(keys).to_be_hidden()  # said only to those at the photo with the keyboard
    frame.focus()
    expect(frame).to_be_focused()
    expect(frame).to_have_accessible_description(re.compile("arrow keys move a box"))
    for _ in range(5):
        page.keyboard.press("ArrowRight")  # the middle box, 25-75 % across, moved to 50-100 %
    expect(keys).to_be_visible()
    for _ in range(6):
        page.keyboard.press("ArrowUp")  # up to the top, where it stops: 0-50 % down
    for _ in range(12):
        page.keyboard.press("Shift+ArrowDown")  # made taller, down to the bottom, where it stops
    expect(page.get_by_role("button", name="Search this area")).to_be_enabled()
    # Heard, not only seen: where the box is now.
    expect(page.locator("[data-announce]")).to_have_text("Box from 50% to 100% across, 0% to 100% down. Enter "
                                                         "searches it.")
    screenshot(page, "browser-keyboard-box")
    page.keyboard.press("Enter")

    expect(page.get_by_text("Searched the boxed area")).to_be_visible()
    wait_until_idle(page)
    x0, y0, x1, y1 = map(float, page.locator("[data-photo-search-body]").get_attribute("data-box").split(","))
    assert (x0, y0, x1) == (500, 0, 1000) and 480 <= y1 <= 500  # the right half of the 1000x500 collage
    assert card_titles(page)[0] == shop["TEE-1"].title


def test_a_tap_places_a_box_without_dragging(page, shop, test_images, tmp_path):
    """Boxing a part of the photo took a drag (WCAG 2.5.7 asks for a way with a single pointer and no dragging): a
    tap now places a box half the photo's size around the point tapped."""
    photo = tmp_path / "chair-and-shirt.jpg"
    collage(test_images).save(photo, quality=90)  # a chair on the left half, a T-shirt on the right
    page.goto("/search/photo/")
    search_by_photo(page, photo)
    search_area = page.get_by_role("button", name="Search this area")
    expect(search_area).to_be_disabled()
    frame = page.locator("[data-region]").bounding_box()
    page.mouse.click(frame["x"] + 0.9 * frame["width"], frame["y"] + 0.5 * frame["height"])  # on the T-shirt
    expect(page.locator("[data-region-box]")).to_be_visible()
    expect(search_area).to_be_enabled()
    search_area.click()
    expect(page.get_by_text("Searched the boxed area")).to_be_visible()
    wait_until_idle(page)
    x0, y0, x1, y1 = map(float, page.locator("[data-photo-search-body]").get_attribute("data-box").split(","))
    assert (x0, x1) == (500, 1000) and (y0, y1) == (125, 375)  # the right half, held at the photo's edge
    assert card_titles(page)[0] == shop["TEE-1"].title


def test_a_file_refused_before_it_is_sent_is_announced_at_the_photo_field(page, tmp_path):
    """The page's own check ("not an image", "larger than ... MB") showed a message no screen reader announced."""
    text = tmp_path / "notes.txt"
    text.write_text("a shopping list")
    page.goto("/search/photo/")
    page.locator("#id_photo").set_input_files(str(text))
    message = page.get_by_role("alert").filter(has_text="That file is not an image.")
    expect(message).to_be_visible()
    expect(page.locator("#id_photo")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#id_photo")).to_have_attribute("aria-describedby", re.compile(r"\bphoto-client-error\b"))
