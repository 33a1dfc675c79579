"""Steps shared by the browser tests, written the way a shopper sees the page (labels, roles, visible text)."""

from pathlib import Path

from playwright.sync_api import Page, expect


def search_by_photo(page: Page, photo: Path, *, category_slug: str = "") -> None:
    """On the search page: choose the photo (and a category), press Find lookalikes, wait for the answer."""
    page.locator("#id_photo").set_input_files(str(photo))
    expect(page.locator("[data-drop-name]")).to_contain_text(photo.name)
    if category_slug:
        page.get_by_label("Look in").select_option(category_slug)
    page.get_by_role("button", name="Find lookalikes").click()
    expect(page.locator("#results-heading")).to_be_visible()
    wait_until_idle(page)


def wait_until_idle(page: Page) -> None:
    """No search in flight, and every photo in view loaded (cards' photos load lazily)."""
    expect(page.locator("[data-progress]")).to_be_hidden()
    page.wait_for_function(
        """() => [...document.images].every(img => {
            const box = img.getBoundingClientRect();
            const inView = box.bottom > 0 && box.top < innerHeight && box.width > 0;
            return !inView || (img.complete && img.naturalWidth > 0);
        })"""
    )


def card_titles(page: Page) -> list[str]:
    return [title.strip() for title in page.locator(".results .product-card-title").all_inner_texts()]


def draw_box(page: Page, left: float, top: float, right: float, bottom: float) -> None:
    """Drag a box on the photo of the results, from (left, top) to (right, bottom) in shares of its width and height."""
    frame = page.locator("[data-region]").bounding_box()
    page.mouse.move(frame["x"] + left * frame["width"], frame["y"] + top * frame["height"])
    page.mouse.down()
    page.mouse.move(frame["x"] + right * frame["width"], frame["y"] + bottom * frame["height"], steps=8)
    page.mouse.up()

