"""Sending the photo from a phone: made smaller in the browser, cancellable, and a refused photo never stands in for
the one before it."""

import pytest

pytest.importorskip("playwright", reason="pip install -r requirements-dev.txt")

from PIL import Image  # noqa: E402
from playwright.sync_api import expect  # noqa: E402

from tests.browser.pages import card_titles, search_by_photo, wait_until_idle

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EXIF_ORIENTATION = 0x0112


@pytest.fixture
def everything_matches(settings):
    settings.SEARCH_MIN_SCORE = 0  # the five-product test catalog: let every product count as a match


def _posts(page) -> list[int]:
    """The size of each request body that sends a photo (a POST), from now on."""
    sizes: list[int] = []
    page.on("request", lambda request: sizes.append(len(request.post_data_buffer or b""))
            if request.method == "POST" else None)
    return sizes


def test_a_cameras_photo_is_sent_upright_at_most_2048_px(page, shop, test_images, tmp_path):
    """A 12-megapixel photo was uploaded whole: minutes on a slow link, for a search that reads a few hundred
    pixels. The browser now sends it upright (the camera's orientation tag applied) and 2048 px at most."""
    photo = tmp_path / "IMG_0001.jpg"
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # held on its side: shown turned a quarter clockwise
    with Image.open(test_images / "shoe-running-3.jpg") as shoe:
        shoe.convert("RGB").rotate(90, expand=True).resize((4000, 3000)).save(photo, quality=95, exif=exif)
    page.goto("/search/photo/")
    sent = _posts(page)
    search_by_photo(page, photo)

    frame = page.locator("[data-region]")
    assert (frame.get_attribute("data-width"), frame.get_attribute("data-height")) == ("1536", "2048")
    assert sent[0] < photo.stat().st_size / 4
    assert card_titles(page)[0] == shop["RUN-3"].title


def test_a_long_strip_of_a_photo_is_sent_as_it_is_not_made_too_thin(page, shop, test_images, tmp_path,
                                                                     everything_matches):
    """6000 x 20 pixels were drawn 2048 x 7 and refused ("each side needs at least 8") where the server takes the
    photo itself."""
    photo = tmp_path / "strip.png"
    with Image.open(test_images / "shoe-running-3.jpg") as shoe:
        shoe.convert("RGB").resize((6000, 20)).save(photo)
    page.goto("/search/photo/")
    search_by_photo(page, photo)

    expect(page.locator("#results-heading")).to_have_text("Lookalikes")
    frame = page.locator("[data-region]")
    assert (frame.get_attribute("data-width"), frame.get_attribute("data-height")) == ("6000", "20")


def test_a_slow_search_can_be_cancelled_and_the_photo_stays_chosen(page, shop, test_images):
    page.goto("/search/photo/")
    held = []  # the search's request, never answered: a slow link
    page.route("**/search/photo/", lambda route: held.append(route) if route.request.method == "POST"
               else route.continue_())
    page.locator("#id_photo").set_input_files(str(test_images / "shoe-running-3.jpg"))
    with page.expect_request(lambda request: request.method == "POST"):
        page.get_by_role("button", name="Find lookalikes").click()
    page.get_by_role("button", name="Cancel").click()

    expect(page.locator("[data-progress]")).to_be_hidden()
    expect(page.locator("[data-announce]")).to_have_text("Search cancelled.")
    expect(page.locator("[data-request-error]")).to_be_hidden()
    expect(page.locator("[data-drop-name]")).to_contain_text("shoe-running-3.jpg")
    page.unroute("**/search/photo/")
    page.get_by_role("button", name="Find lookalikes").click()
    expect(page.locator("#results-heading")).to_have_text("Lookalikes")


def test_a_search_started_from_the_keyboard_can_be_cancelled_from_it(page, shop, test_images):
    """The button pressed was disabled under the focus, which fell to the page's start: Cancel was three Shift+Tabs
    away, and Escape did nothing."""
    page.goto("/search/photo/")
    held = []
    page.route("**/search/photo/", lambda route: held.append(route) if route.request.method == "POST"
               else route.continue_())
    page.locator("#id_photo").set_input_files(str(test_images / "shoe-running-3.jpg"))
    page.get_by_role("button", name="Find lookalikes").focus()
    with page.expect_request(lambda request: request.method == "POST"):
        page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("[data-progress]")).to_be_hidden()
    expect(page.locator("[data-announce]")).to_have_text("Search cancelled.")
    expect(page.get_by_role("button", name="Find lookalikes")).to_be_focused()


def test_a_photo_refused_under_the_results_is_not_replaced_by_the_one_before(page, shop, test_images, tmp_path,
                                                                              everything_matches):
    """Refused by the page's check or by the server, the new photo left the previous one to be searched again by
    "Find lookalikes", under a heading that read as if the new one had been."""
    page.goto("/search/photo/")
    search_by_photo(page, test_images / "chair-cafe-pair.jpg")
    sent = _posts(page)
    notes = tmp_path / "notes.txt"
    notes.write_text("a shopping list")
    page.locator("#id_photo").set_input_files(str(notes))
    expect(page.get_by_role("alert").filter(has_text="That file is not an image.")).to_be_visible()
    page.get_by_role("button", name="Find lookalikes").click()
    expect(page.locator("#id_photo")).to_be_focused()
    assert sent == []

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + bytes(500))  # a JPEG by its name and type only: the server refuses it
    page.locator("#id_photo").set_input_files(str(broken))
    page.get_by_role("button", name="Find lookalikes").click()
    expect(page.locator("[data-request-error]")).to_be_visible()
    expect(page.locator("[data-announce]")).to_have_text("The file is not a readable image.")  # not "Searching…"
    wait_until_idle(page)
    expect(page.locator("[data-drop-chosen]")).to_be_hidden()  # no longer "Ready to search"
    page.get_by_role("button", name="Find lookalikes").click()
    expect(page.locator("#id_photo")).to_be_focused()
    assert len(sent) == 1
    expect(page.locator("#results-heading")).to_have_text("Lookalikes")  # the results found before stay

    # A search of the photo on screen (a box) renews the form: the refusal is gone with it, and "Find lookalikes"
    # searches that photo again, where it went on pointing at the refused one's message.
    page.locator("[data-region]").click()
    page.get_by_role("button", name="Search this area").click()
    expect(page.get_by_text("Searched the boxed area")).to_be_visible()
    wait_until_idle(page)
    expect(page.locator("[data-request-error]")).to_be_hidden()
    with page.expect_request(lambda request: request.method == "POST"):
        page.get_by_role("button", name="Find lookalikes").click()
    wait_until_idle(page)
    expect(page.locator("[data-request-error]")).to_be_hidden()  # not the broken file again: the server refuses it
    expect(page.locator("#results-heading")).to_have_text("Lookalikes")

    # Refused by the server, then another photo chosen: what was said of the first is not said of this one.
    page.locator("#id_photo").set_input_files(str(broken))
    page.get_by_role("button", name="Find lookalikes").click()
    expect(page.locator("[data-request-error]")).to_be_visible()
    wait_until_idle(page)
    page.locator("#id_photo").set_input_files(str(test_images / "plant-cactus.jpg"))
    expect(page.locator("[data-request-error]")).to_be_hidden()


def test_a_photo_this_browser_cannot_show_is_still_ready_to_search(page):
    """A HEIC photo in a browser that does not read HEIC showed an empty white square beside "Ready to search"."""
    page.goto("/search/photo/")
    page.locator("#id_photo").set_input_files(
        {"name": "IMG_0002.HEIC", "mimeType": "image/heic", "buffer": b"\x00\x00\x00\x18ftypheic" + bytes(2000)})
    expect(page.locator("[data-drop-name]")).to_contain_text("IMG_0002.HEIC")
    expect(page.locator("[data-drop-name]")).to_contain_text("no preview in this browser")
    expect(page.locator("[data-drop-thumb]")).to_be_hidden()
    expect(page.get_by_text("Ready to search")).to_be_visible()


def test_a_photo_over_the_size_limit_that_the_browser_can_shrink_is_searched(page, shop, test_images, tmp_path,
                                                                             settings):
    """A 108-megapixel camera's photo passes the size limit: it was refused before the browser had made it small."""
    settings.UPLOAD_MAX_BYTES = 1024 * 1024
    photo = tmp_path / "IMG_0003.jpg"
    with Image.open(test_images / "shoe-running-3.jpg") as shoe:
        shoe.convert("RGB").resize((5000, 3750)).save(photo, quality=97)
    assert photo.stat().st_size > settings.UPLOAD_MAX_BYTES
    page.goto("/search/photo/")
    search_by_photo(page, photo)
    assert card_titles(page)[0] == shop["RUN-3"].title

    # One the browser cannot read is refused before it is sent, as before.
    page.locator("#id_photo").set_input_files(
        {"name": "IMG_0004.HEIC", "mimeType": "image/heic", "buffer": bytes(settings.UPLOAD_MAX_BYTES + 1)})
    expect(page.get_by_role("alert").filter(has_text="The file is larger than 1 MB.")).to_be_visible()


def test_a_first_photo_refused_by_the_server_is_said_by_the_live_region(page, shop, tmp_path):
    """The error was shown and focused, and the live region went on saying "Searching…"."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + bytes(500))
    page.goto("/search/photo/")
    page.locator("#id_photo").set_input_files(str(broken))
    page.get_by_role("button", name="Find lookalikes").click()
    expect(page.locator("[data-announce]")).to_have_text("The file is not a readable image.")
