"""Shopper pages, rendered through the test client against the real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse

from catalog.services import product_image_add
from search.calibration import default_cutoff, match_score
from search.embeddings import VECTOR_DIMENSIONS
from search.selectors import search_space_model
from search.services import StoredVector, image_embeddings_store
from tests.factories import CategoryFactory, ProductFactory, uploaded_image

pytestmark = pytest.mark.django_db


def add_image(product, *, name="photo.jpg", color=(200, 40, 40)):
    return product_image_add(product=product, file=uploaded_image(name, size=(64, 48), color=color))


def unit_vector(*weights: float) -> np.ndarray:
    vector = np.zeros(VECTOR_DIMENSIONS, dtype=np.float32)
    vector[: len(weights)] = weights
    return vector / np.linalg.norm(vector)


def store_vector(image, vector) -> None:
    image_embeddings_store(model=search_space_model(), items=[StoredVector(image_id=image.pk, vector=vector)])


def titles(response) -> list[str]:
    return [product.title for product in response.context["products"]]


def test_home_lists_top_level_categories_with_a_photo_from_below(client):
    furniture = CategoryFactory(name="Furniture")
    sofas = CategoryFactory(name="Sofas", parent=furniture)
    CategoryFactory(name="Lighting")
    image = add_image(ProductFactory(title="Grey sofa", category=sofas))

    response = client.get(reverse("catalog:home"))

    assert response.status_code == 200
    tiles = {tile["category"].name: tile["image"] for tile in response.context["category_tiles"]}
    assert set(tiles) == {"Furniture", "Lighting"}
    assert tiles["Furniture"] == image and tiles["Lighting"] is None
    html = response.content.decode()
    assert furniture.get_absolute_url() in html
    assert image.card_url in html
    assert 'href="/search/photo/"' in html  # the photo-search call to action


def test_category_page_includes_descendants_and_excludes_inactive(client):
    shoes = CategoryFactory(name="Shoes")
    sneakers = CategoryFactory(name="Sneakers", parent=shoes)
    ProductFactory(title="Leather boot", category=shoes)
    ProductFactory(title="Canvas sneaker", category=sneakers)
    ProductFactory(title="Retired sneaker", category=sneakers, active=False)
    ProductFactory(title="Desk lamp", category=CategoryFactory(name="Lighting"))

    response = client.get(shoes.get_absolute_url())

    assert response.status_code == 200
    assert titles(response) == ["Canvas sneaker", "Leather boot"]
    html = response.content.decode()
    assert "Retired sneaker" not in html
    assert sneakers.get_absolute_url() in html  # subcategory chip


def test_category_page_breadcrumb_lists_ancestors_root_first(client):
    home = CategoryFactory(name="Home")
    furniture = CategoryFactory(name="Furniture", parent=home)
    sofas = CategoryFactory(name="Sofas", parent=furniture)

    response = client.get(sofas.get_absolute_url())

    assert [category.name for category in response.context["ancestors"]] == ["Home", "Furniture"]


def test_category_page_paginates_24_per_page_and_keeps_the_sort(client):
    category = CategoryFactory()
    for n in range(25):
        ProductFactory(title=f"Chair {n:02d}", category=category)

    first = client.get(category.get_absolute_url(), {"sort": "newest"})
    second = client.get(category.get_absolute_url(), {"sort": "newest", "page": 2})

    assert len(first.context["products"]) == 24
    assert titles(first)[0] == "Chair 24"  # newest first
    assert "?sort=newest&amp;page=2" in first.content.decode()
    assert titles(second) == ["Chair 00"]
    # A page number below the first is the first page (it was the last), one past the last the last
    for number in ("0", "-3", "²", "--1", "x"):
        assert client.get(category.get_absolute_url(), {"sort": "newest", "page": number}).context["page_obj"].number == 1
    assert titles(client.get(category.get_absolute_url(), {"sort": "newest", "page": 9})) == ["Chair 00"]


def test_category_page_sorts_by_title_by_default_and_ignores_unknown_sorts(client):
    category = CategoryFactory()
    for title in ["Banana", "Apple", "Cherry"]:
        ProductFactory(title=title, category=category)

    assert titles(client.get(category.get_absolute_url())) == ["Apple", "Banana", "Cherry"]
    assert titles(client.get(category.get_absolute_url(), {"sort": "price; drop"})) == ["Apple", "Banana", "Cherry"]


def test_names_sort_as_a_reader_orders_them_whatever_their_case_and_accents(client):
    """The database's collation (C on the embedded server) put every capital first and accented letters last: Apple,
    Zebra, apple pie, banana, zucchini, Éclair."""
    category = CategoryFactory()
    for title in ["banana", "Apple", "apple pie", "Zebra", "\u00c9clair", "zucchini", "Eclipse"]:
        ProductFactory(title=title, category=category)

    expected = ["Apple", "apple pie", "banana", "\u00c9clair", "Eclipse", "Zebra", "zucchini"]
    assert titles(client.get(category.get_absolute_url())) == expected
    api = client.get("/api/v1/products/", {"category": category.slug, "sort": "title"}).json()
    assert [product["title"] for product in api["results"]] == expected


def test_category_page_query_count_does_not_grow_with_products(client, django_assert_max_num_queries):
    root = CategoryFactory()
    child = CategoryFactory(parent=root)
    for n in range(30):
        product = ProductFactory(category=child if n % 2 else root)
        add_image(product)
        add_image(product, name="second.jpg", color=(40, 40, 200))

    with django_assert_max_num_queries(9):
        response = client.get(root.get_absolute_url())

    assert response.status_code == 200
    assert all(product.card_images for product in response.context["products"])


def test_product_page_shows_its_images_in_order(client, product):
    first = add_image(product, name="front.jpg")
    second = add_image(product, name="back.jpg", color=(20, 40, 200))

    response = client.get(product.get_absolute_url())

    assert response.status_code == 200
    html = response.content.decode()
    assert f'src="{first.file.url}"' in html  # the main photo, full size
    assert f'src="{first.card_url}"' in html and f'src="{second.card_url}"' in html  # the strip: thumbnails
    assert f'href="{second.file.url}"' in html  # each thumbnail opens its full photo
    assert html.index(first.card_url) < html.index(second.card_url)
    assert f'width="{first.width}" height="{first.height}"' in html
    assert 'href="#more-like-this"' in html and 'id="more-like-this"' in html


@pytest.mark.parametrize("price, currency, shown", [
    ("1234.50", "USD", "$1,234.50"), ("1500", "JPY", "1,500&nbsp;JPY"), ("12.30", "CHF", "12.30&nbsp;CHF"),
    ("1500.50", "JPY", "1,500.50&nbsp;JPY"),  # not rounded to 1,501: a price the filters compare as 1500.50
])
def test_a_price_reads_in_its_currencys_decimals(client, price, currency, shown):
    """A currency without minor units has no cents to show: a yen price read "1,500.00 JPY"."""
    product = ProductFactory(price=price, currency=currency)
    assert f'<span class="price">{shown}</span>' in client.get(product.get_absolute_url()).content.decode()


def test_product_page_explains_missing_similar_products_before_processing(client, product):
    add_image(product)

    response = client.get(product.get_absolute_url())

    assert response.context["similar_products"] == []
    assert "Similar products appear once this product's photos are processed." in response.content.decode()


def test_more_like_this_stays_in_the_category_tree_unless_asked(client, settings):
    settings.NEAR_DUPLICATE_MIN_SCORE = 0.999  # these made-up vectors are 0.96 alike: not folded as duplicates here
    shoes = CategoryFactory(name="Shoes")
    sneakers = CategoryFactory(name="Sneakers", parent=shoes)
    target = ProductFactory(title="Red runner", category=shoes)
    near = ProductFactory(title="Red sneaker", category=sneakers)
    elsewhere = ProductFactory(title="Red lamp", category=CategoryFactory(name="Lighting"))
    store_vector(add_image(target), unit_vector(1, 0, 0))
    store_vector(add_image(near), unit_vector(1, 0.3, 0))
    store_vector(add_image(elsewhere), unit_vector(1, 0, 0.2))

    in_category = client.get(target.get_absolute_url())
    everywhere = client.get(target.get_absolute_url(), {"scope": "all"})

    assert [item.product for item in in_category.context["similar_products"]] == [near]
    assert [item.product for item in everywhere.context["similar_products"]] == [elsewhere, near]
    html = everywhere.content.decode()
    # The badge shows the calibrated match score (cosine 0.981 and 0.958 here; this tiny space uses the default cut-off).
    for similarity in (0.981, 0.958):
        assert f"{round(100 * match_score(similarity, default_cutoff()))}% match" in html
    assert near.get_absolute_url() in html


def test_text_search_finds_by_description_and_ranks_title_matches_first(client):
    table = ProductFactory(title="Walnut coffee table", description="Solid wood, oiled finish.")
    bench = ProductFactory(title="Oak bench", description="Pairs well with a walnut coffee table.")
    ProductFactory(title="Walnut tray", description="Hidden.", active=False)
    ProductFactory(title="Steel stool", description="Powder-coated.")

    by_description = client.get(reverse("catalog:text_search"), {"q": "oiled"})
    ranked = client.get(reverse("catalog:text_search"), {"q": "walnut"})

    assert list(by_description.context["products"]) == [table]
    assert list(ranked.context["products"]) == [table, bench]
    assert "Results for “walnut”" in ranked.content.decode()


def test_text_search_shows_an_empty_state_with_the_query(client):
    ProductFactory(title="Walnut coffee table")

    response = client.get(reverse("catalog:text_search"), {"q": "<b>velvet</b>"})

    html = response.content.decode()
    assert response.status_code == 200
    assert "No products match “&lt;b&gt;velvet&lt;/b&gt;”" in html
    assert 'value="&lt;b&gt;velvet&lt;/b&gt;"' in html  # echoed back into the search box, escaped


def test_unknown_and_inactive_products_are_404(client):
    hidden = ProductFactory(active=False)

    missing = client.get(reverse("catalog:product", kwargs={"sku": "NO-SUCH-SKU"}))
    inactive = client.get(hidden.get_absolute_url())

    assert missing.status_code == 404 and inactive.status_code == 404
    assert "find that page" in missing.content.decode()  # the shop's own 404 template


def test_header_lists_top_level_categories_on_every_page(client):
    root = CategoryFactory(name="Garden")
    CategoryFactory(name="Hoses", parent=root)

    response = client.get(reverse("catalog:text_search"))  # a catalog with no product yet

    html = response.content.decode()
    assert response.status_code == 200
    assert f'href="{root.get_absolute_url()}"' in html
    assert "Hoses" not in html


def test_a_renamed_top_level_category_shows_in_the_header_of_the_next_page(client):
    """The header's list had a 60 s cache of its own: the pages the rename retired were drawn again with the old
    name and link, and kept so for five more minutes."""
    root = CategoryFactory(name="Garden", slug="garden")
    client.get(reverse("catalog:text_search"))

    root.name, root.slug = "Outdoors", "outdoors"
    root.save()
    html = client.get(reverse("catalog:home")).content.decode()

    assert "Outdoors" in html and 'href="/c/garden/"' not in html


def test_no_template_comment_spans_lines():
    """Django's {# #} comments end at their line: one that went on to the next was printed on the page as text (the
    photo results showed "{# The main colours of the matches: ..." above the colour swatches)."""
    templates = Path(__file__).resolve().parent.parent / "templates"
    unclosed = [f"{path.relative_to(templates)}:{number}"
                for path in sorted(templates.rglob("*.html"))
                for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                if "{#" in line and "#}" not in line.split("{#", 1)[1]]
    assert unclosed == []


def test_an_empty_category_offers_its_parent_and_no_sort(client, db):
    """Sorting nothing, with a photo search as the only way on, was all an empty category offered."""
    from tests.factories import CategoryFactory

    decor = CategoryFactory(name="Decor", slug="decor")
    vases = CategoryFactory(name="Vases", slug="vases", parent=decor)
    html = client.get(vases.get_absolute_url()).content.decode()
    assert "Nothing here yet" in html and 'name="sort"' not in html
    assert f'href="{decor.get_absolute_url()}">Back to Decor</a>' in html


def test_a_product_under_other_colours_is_not_folded_under_more_like_this_too(client, settings):
    """The blue hoodie showed under "Same look, other colours" and again as a near-duplicate listing folded under
    the black hoodie of another category that More like this (the whole catalog) ranked above it."""
    settings.SEARCH_MIN_SCORE = 0.1
    hoodies, other = CategoryFactory(name="Hoodies"), CategoryFactory(name="Sweaters")
    shown = ProductFactory(category=hoodies, title="Black hoodie")
    blue = ProductFactory(category=hoodies, title="Blue hoodie")
    elsewhere = ProductFactory(category=other, title="Black hoodie, filed elsewhere")
    vectors = {shown: unit_vector(1, 0, 0), elsewhere: unit_vector(1, 0.2, 0), blue: unit_vector(1, 0.25, 0.12)}
    for product, vector in vectors.items():
        image = add_image(product)
        colour = "blue" if product == blue else "black"
        image_embeddings_store(model=search_space_model(), items=[StoredVector(image_id=image.pk, vector=vector,
                                                                               colours=[colour])])
    page = client.get(f"/p/{shown.sku}/", {"scope": "all"})
    assert [item.product for item in page.context["other_colours"]] == [blue]
    assert [item.product for item in page.context["similar_products"]] == [elsewhere]
    assert page.content.decode().count(f'href="{blue.get_absolute_url()}"') == 1


def test_more_like_this_emptied_by_the_other_colours_above_it_says_so(client, settings):
    """Every close match was under "Same look, other colours", and More like this said "Nothing similar in
    Hoodies yet" beneath them."""
    settings.SEARCH_MIN_SCORE = 0.1
    hoodies = CategoryFactory(name="Hoodies")
    shown = ProductFactory(category=hoodies, title="Black hoodie")
    blue = ProductFactory(category=hoodies, title="Blue hoodie")
    for product, vector, colour in ((shown, unit_vector(1, 0, 0), "black"), (blue, unit_vector(1, 0.25, 0.12), "blue")):
        image_embeddings_store(model=search_space_model(), items=[StoredVector(
            image_id=add_image(product).pk, vector=vector, colours=[colour])])
    page = client.get(f"/p/{shown.sku}/")
    assert [item.product for item in page.context["other_colours"]] == [blue]
    html = page.content.decode()
    assert "The closest products are its other colours, above." in html and "Nothing similar" not in html


def test_a_listing_folded_under_one_shown_under_other_colours_takes_its_place_in_more_like_this(client, settings):
    """More like this dropped a result already under "Same look, other colours", and with it the near-duplicate
    listing folded under it, which was then on the page nowhere."""
    settings.SEARCH_MIN_SCORE = 0.1
    hoodies = CategoryFactory(name="Hoodies")
    shown = ProductFactory(category=hoodies, title="Black hoodie")
    blue = ProductFactory(category=hoodies, title="Blue hoodie")
    relisted = ProductFactory(category=hoodies, title="Blue hoodie, listed again")  # the same photo: folded
    colours = {shown: "black", blue: "blue", relisted: "blue"}
    vectors = {shown: unit_vector(1, 0, 0), blue: unit_vector(1, 0.25, 0.12), relisted: unit_vector(1, 0.25, 0.12)}
    for n, colour in enumerate(["red", "green", "yellow", "white", "grey"]):  # "other colours" is full without it
        product = ProductFactory(category=hoodies, title=f"{colour.title()} hoodie")
        colours[product], vectors[product] = colour, unit_vector(1, 0.1 * n, 0.3)
    for product, vector in vectors.items():
        image = add_image(product)
        image_embeddings_store(model=search_space_model(), items=[StoredVector(
            image_id=image.pk, vector=vector, colours=[colours[product]])])
    page = client.get(f"/p/{shown.sku}/")
    assert blue in [item.product for item in page.context["other_colours"]]
    assert relisted not in [item.product for item in page.context["other_colours"]]
    assert [item.product for item in page.context["similar_products"]] == [relisted]
    assert page.content.decode().count(f'href="{relisted.get_absolute_url()}"') >= 1


def test_pages_carry_a_content_security_policy_and_the_api_docs_do_not(client, settings):
    """Markup slipped into a product's text could have run scripts from anywhere: nothing said where they may come
    from. The browser tests fail on anything the policy refuses on the pages they drive."""
    product = ProductFactory()
    for url in ("/", product.get_absolute_url(), product.category.get_absolute_url(), "/search/photo/",
                "/api/v1/products/", "/admin/login/"):
        policy = client.get(url)["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "object-src 'none'" in policy, url
    assert "Content-Security-Policy" not in client.get("/api/v1/docs/")  # its UI starts with an inline script
    settings.CONTENT_SECURITY_POLICY = ""
    assert "Content-Security-Policy" not in client.get("/")
