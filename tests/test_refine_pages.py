"""Refining a photo search on the page (category chips, price, sort, show more) by the kept query vector, and
"More like this" with a price range and an order: every control is a GET URL that can be shared."""

from __future__ import annotations

import re

import pytest

from catalog.models import Category
from tests.factories import uploaded_file
from tests.support import page_links

pytestmark = pytest.mark.django_db

URL = "/search/photo/"


def _skus(response) -> list[str]:
    return [item.product.sku for item in response.context["search"].results]


@pytest.fixture
def searched(client, catalog, test_images, settings):
    settings.SEARCH_MIN_SCORE = 0  # every product matches: the chips count all of them
    return client.post(URL, {"photo": uploaded_file(test_images / "chair-cafe-pair.jpg")})


def test_chips_show_what_the_photo_looks_like_most_first(searched):
    html = searched.content.decode()
    assert "Looks like:" in html
    chips = page_links(searched, "data-chip")
    assert list(chips) == ["Chairs (2)", "Shoes (2)", "Tops (1)"]
    token = searched.context["token"]
    assert chips["Chairs (2)"] == f"{URL}?query={token}&category={Category.objects.get(name='Chairs').slug}"


def test_chips_of_two_categories_of_one_name_show_their_paths(client, catalog, test_images, settings):
    """Both read "Shoes (2)": a shopper could not tell which was which."""
    from catalog.services import category_save

    settings.SEARCH_MIN_SCORE = 0
    chairs = Category.objects.get(name="Chairs")
    chairs.name = "Shoes"  # under Home, beside Clothing's Shoes
    category_save(category=chairs)
    searched = client.post(URL, {"photo": uploaded_file(test_images / "chair-cafe-pair.jpg")})
    chips = list(page_links(searched, "data-chip"))
    assert chips == [f"{chairs.parent.name} > Shoes (2)", "Clothing > Shoes (2)", "Tops (1)"]


def test_a_chip_scopes_the_search_without_the_photo(client, searched):
    chips = page_links(searched, "data-chip")
    scoped = client.get(chips["Shoes (2)"])  # a GET: nothing uploaded
    assert scoped.status_code == 200
    assert sorted(_skus(scoped)) == ["RUN-1", "RUN-3"]
    html = scoped.content.decode()
    assert "Your earlier photo" in html and "data:image/jpeg" not in html  # the photo was never kept
    # The chip of the current category is marked; "All categories" leads back to the whole catalog.
    assert re.search(r'<a class="chip"[^>]+aria-current="true">Shoes', html)
    everything = client.get(page_links(scoped, "data-refine")["All categories"])
    assert sorted(_skus(everything)) == sorted(_skus(searched))


def test_price_and_sort_controls_refine_and_keep_the_category(client, searched):
    token = searched.context["token"]
    html = searched.content.decode()
    assert f'<input type="hidden" name="query" value="{token}">' in html
    shoes = Category.objects.get(name="Shoes").slug
    response = client.get(URL, {"query": token, "category": "", "sort": "price", "max_price": "100"})
    assert _skus(response) == ["TEE-1", "RUN-1", "RUN-3", "CHAIR-2"]
    dearest = client.get(URL, {"query": token, "category": shoes, "sort": "-price"})
    assert _skus(dearest) == ["RUN-3", "RUN-1"]
    # The refined page's own links keep the refinements: a chip keeps the price range and the order.
    chips = page_links(response, "data-chip")
    assert chips["Shoes (2)"].endswith(f"category={shoes}&max_price=100&sort=price&currency=USD")  # the range's
    assert _skus(client.get(chips["Shoes (2)"])) == ["RUN-1", "RUN-3"]


def test_the_same_photo_searched_again_from_its_results_keeps_their_price_and_order(client, searched, test_images):
    """A box drawn, or the whole photo again, sends the photo with the refinements in force (static/js/
    photo-search.js): they were dropped, and the new results came unfiltered in best-match order."""
    boxed = client.post(URL, {"photo": uploaded_file(test_images / "chair-cafe-pair.jpg"), "box": "0,0,400,300",
                              "sort": "price", "max_price": "100"})
    assert boxed.status_code == 200
    assert _skus(boxed) == ["TEE-1", "RUN-1", "RUN-3", "CHAIR-2"]  # as the same refinements by the kept query
    html = boxed.content.decode()
    assert 'value="100"' in html and '<option value="price" selected>' in html  # shown as in force


def test_a_bad_price_is_a_message_on_the_page_and_the_rest_still_applies(client, searched):
    token = searched.context["token"]
    response = client.get(URL, {"query": token, "min_price": "cheap", "sort": "price"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "data-refine-errors" in html and "Enter a price as a number, such as 25 or 19.99." in html
    assert _skus(response)[0] == "TEE-1"  # still sorted by price, without the bad filter
    # In a shopper's words, not Django's "Ensure that there are no more than 10 digits in total."
    for typed, message in [("123456789012", "Enter a price below 100,000,000, with at most 2 decimals."),
                           ("1.23456789012", "Enter a price below 100,000,000, with at most 2 decimals."),
                           ("-5", "Enter a price of 0 or more."),
                           ("9.999", "Enter a price with at most 2 decimals, such as 19.99.")]:
        assert message in client.get(URL, {"query": token, "min_price": typed}).content.decode(), typed
    reversed_range = client.get(URL, {"query": token, "min_price": "100", "max_price": "10"})
    assert "The highest price must not be below the lowest." in reversed_range.content.decode()
    # Neither end applies: all of the results, not "No lookalikes at that price" beside the error.
    assert _skus(reversed_range) == _skus(client.get(URL, {"query": token}))
    assert "at that price" not in reversed_range.content.decode()


def test_an_expired_search_asks_for_the_photo_again(client, catalog):
    response = client.get(URL, {"query": "x" * 22, "category": "chairs"})
    assert response.status_code == 410
    html = response.content.decode()
    assert "That search has expired" in html
    assert "data-photo-form" in html


def test_more_like_this_on_the_product_page_takes_price_and_sort(client, catalog, settings):
    settings.SEARCH_MIN_SCORE = 0
    page = client.get("/p/CHAIR-1/", {"scope": "all", "sort": "price", "max_price": "70"})
    assert page.status_code == 200
    assert [item.product.sku for item in page.context["similar_products"]] == ["TEE-1", "RUN-1", "RUN-3"]
    html = page.content.decode()
    assert '<input type="hidden" name="scope" value="all">' in html  # the form keeps "all categories"
    assert 'data-refine-form' in html
    bad = client.get("/p/CHAIR-1/", {"sort": "cheapest"})
    assert bad.status_code == 200
    assert "Sort by best match, price or newest." in bad.content.decode()


def test_an_empty_refinement_names_what_emptied_it(client, searched, catalog, settings):
    """A colour, or an order alone, was blamed on a price nobody set ("No lookalikes at that price")."""
    pink = client.get(URL, {"query": searched.context["token"], "colour": "pink"})  # nothing in the catalog is pink
    html = pink.content.decode()
    assert "No lookalikes in that colour" in html and "at that price" not in html
    any_colour = page_links(pink, "data-refine")["Any colour"]  # the way out, with no swatch left to show it
    assert "colour=" not in any_colour and client.get(any_colour).context["search"].results

    settings.SEARCH_MIN_SCORE = 0.99  # nothing is a real match: a sorted More like this keeps only those
    sorted_page = client.get("/p/CHAIR-1/", {"sort": "price"}).content.decode()
    assert "Nothing looks enough like it to sort" in sorted_page and "at that price" not in sorted_page
    priced = client.get("/p/CHAIR-1/", {"max_price": "1"}).content.decode()
    assert "Nothing that looks like it at that price" in priced


def test_a_colour_is_read_in_any_case_on_the_pages_as_in_the_api(client, searched, catalog, settings):
    """"colour=RED" was "There is no such colour to filter by." on the pages and a filter through the API."""
    settings.SEARCH_MIN_SCORE = 0
    for page, lower in ((URL, {"query": searched.context["token"]}), ("/p/CHAIR-1/", {"scope": "all"})):
        shouting = client.get(page, {**lower, "colour": " PINK"}).content.decode()
        assert "no such colour" not in shouting and "in that colour" in shouting  # nothing in the catalog is pink
        assert client.get(page, {**lower, "colour": "Red"}).context["refine_form"].refine().colour == "red"


def test_the_way_out_of_an_empty_more_like_this_clears_only_what_emptied_it(client, catalog, settings):
    """"Clear the price" went back to the best match in any colour: the order and the colour were dropped too."""
    settings.SEARCH_MIN_SCORE = 0
    priced = client.get("/p/CHAIR-1/", {"sort": "-price", "colour": "red", "max_price": "1", "scope": "all"})
    clear = re.search(r'<a href="([^"]+)">Clear the price</a>', priced.content.decode())[1].replace("&amp;", "&")
    assert clear == "/p/CHAIR-1/?sort=-price&colour=red&scope=all#more-like-this"
    pink = client.get("/p/CHAIR-1/", {"sort": "-price", "colour": "pink", "scope": "all"}).content.decode()
    assert "Nothing that looks like it in that colour" in pink and "to sort" not in pink
    any_colour = re.search(r'<a href="([^"]+)">Any colour</a>', pink)[1].replace("&amp;", "&")
    assert any_colour == "/p/CHAIR-1/?sort=-price&scope=all#more-like-this"  # nothing in the catalog is pink
    assert client.get(any_colour).context["similar_products"]


def test_more_like_this_keeps_its_price_and_order_when_it_looks_elsewhere(client, catalog, settings):
    settings.SEARCH_MIN_SCORE = 0
    page = client.get("/p/CHAIR-1/", {"scope": "all", "sort": "price", "max_price": "70"})
    html = page.content.decode()
    here = re.search(r'<a href="([^"]+)"[^>]*>In Chairs</a>', html)[1].replace("&amp;", "&")
    everywhere = re.search(r'<a href="([^"]+)"[^>]*>All categories</a>', html)[1].replace("&amp;", "&")
    assert here == "/p/CHAIR-1/?sort=price&max_price=70#more-like-this"
    assert everywhere == "/p/CHAIR-1/?scope=all&sort=price&max_price=70#more-like-this"


def test_a_product_without_photos_does_not_promise_lookalikes_once_they_are_processed(client, catalog):
    from catalog import services

    bare = services.product_create(sku="BARE-1", title="No photo yet", category=catalog["CHAIR-1"].category,
                                   price="10")
    html = client.get(bare.get_absolute_url()).content.decode()
    assert "no photo to compare yet" in html and "once this product's photos are processed" not in html


def test_a_product_whose_photos_failed_does_not_promise_lookalikes_once_they_are_processed(client, catalog):
    from search.services import image_embedding_fail

    chair = catalog["CHAIR-1"]
    photo = chair.images.get()
    photo.embeddings.all().delete()  # as a photo whose every try failed: no vector
    image_embedding_fail(image_id=photo.pk, error="OSError: truncated file")
    html = client.get(chair.get_absolute_url()).content.decode()
    assert "no similar products to show" in html and "once this product's photos are processed" not in html


def test_a_currency_alone_changes_nothing_more_like_this_lists(client, catalog, settings):
    """Left in the address by "Clear the price", a currency made More like this keep real matches only, as a filter
    does, and say "Nothing looks enough like it to sort" though nothing was sorted."""
    settings.SEARCH_MIN_SCORE = 0.99  # nothing is a real match: a filtered or sorted More like this lists none
    plain = client.get("/p/CHAIR-1/", {"scope": "all"})
    assert plain.context["similar_products"]
    with_currency = client.get("/p/CHAIR-1/", {"scope": "all", "currency": "EUR"})
    assert ([item.product.sku for item in with_currency.context["similar_products"]]
            == [item.product.sku for item in plain.context["similar_products"]])
    priced = client.get("/p/CHAIR-1/", {"max_price": "1", "currency": "EUR"}).content.decode()
    clear = re.search(r'<a href="([^"]+)">Clear the price</a>', priced)[1]
    assert "currency" not in clear


def test_an_empty_price_range_names_a_currency_no_product_is_in_and_offers_any_price(client, searched):
    """The empty state said "Widen it" for a range in euros in a shop of dollars, where no width helps, and gave no
    link out of a range."""
    token = searched.context["token"]
    euros = client.get(URL, {"query": token, "max_price": "100", "currency": "eur"})
    html = euros.content.decode()
    assert "Nothing in our catalog is priced in EUR." in html and "Widen it" not in html
    any_price = page_links(euros, "data-refine")["Any price"]
    assert "price" not in any_price and "currency" not in any_price and client.get(any_price).context["search"].results
    cheap = client.get(URL, {"query": token, "max_price": "1", "sort": "-price"})
    assert "Widen it" in cheap.content.decode()
    assert page_links(cheap, "data-refine")["Any price"].endswith("sort=-price&currency=USD")  # the order stays
    # Sorted by price, and within a category: the way out drops the unsold currency too, and is offered there.
    shoes = Category.objects.get(name="Shoes").slug
    sorted_euros = client.get(URL, {"query": token, "max_price": "100", "currency": "EUR", "sort": "price",
                                    "category": shoes})
    assert "Nothing in our catalog is priced in EUR." in sorted_euros.content.decode()
    assert page_links(sorted_euros, "data-refine")["Any price"].endswith("sort=price&currency=USD")


@pytest.mark.parametrize("sku", ["SOFA#12", "WHAT?-1", "A%41"])
def test_more_like_this_links_keep_a_sku_that_urls_must_escape(client, catalog, sku):
    """The links were built from the request's decoded path: "#" began a fragment, "?" a query, and "%41" led to
    product "AA"."""
    from catalog.models import Product
    from catalog.services import product_update

    product_update(product=Product.objects.get(sku="CHAIR-1"), sku=sku)
    product = Product.objects.get(sku=sku)
    html = client.get(product.get_absolute_url()).content.decode()
    everywhere = re.search(r'<a href="([^"]+)"[^>]*>All categories</a>', html)[1].replace("&amp;", "&")
    assert everywhere == f"{product.get_absolute_url()}?scope=all#more-like-this"
    assert client.get(everywhere.split("#")[0]).context["product"] == product
