"""Model switches: search keeps answering from the old space until the new one is complete; spaces never mix."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from catalog import services as catalog_services
from catalog.models import EmbeddingStatus, ProductImage
from search import services, sweep
from search.embeddings import EfficientNetLite2, get_embedder
from search.models import EmbeddingSpace, ImageEmbedding
from search.selectors import search_space_model, similar_products_to_product
from tests.factories import uploaded_file
from tests.support import embedding_queue, held_in_another_transaction

pytestmark = [pytest.mark.django_db, pytest.mark.servers]

LITE0, LITE2 = "efficientnet-lite0", "efficientnet-lite2"


@pytest.fixture
def small_catalog(settings, test_images):
    settings.EMBEDDING_MODEL = LITE0
    shoes = catalog_services.category_get_or_create_path(path="Clothing > Shoes")
    chairs = catalog_services.category_get_or_create_path(path="Home > Chairs")
    products = {}
    for sku, category, photo in [
        ("RUN-1", shoes, "shoe-running-1.jpg"),
        ("RUN-2", shoes, "shoe-running-2.jpg"),
        ("CHAIR-1", chairs, "chair-armchair-blue.jpg"),
        ("CHAIR-2", chairs, "chair-shell-black.jpg"),
    ]:
        product = catalog_services.product_create(sku=sku, title=sku, category=category, price="10")
        catalog_services.product_image_add(product=product, file=uploaded_file(test_images / photo))
        products[sku] = product
    call_command("reindex", stdout=open("/dev/null", "w"))
    return products


def _neighbour_sku(product):
    return [s.product.sku for s in similar_products_to_product(product=product, limit=3)][0]


def test_first_model_becomes_the_active_space(small_catalog):
    assert EmbeddingSpace.objects.get(state=EmbeddingSpace.State.ACTIVE).model == get_embedder(LITE0).id
    assert _neighbour_sku(small_catalog["RUN-1"]) == "RUN-2"


def test_switching_models_keeps_search_answering_then_switches_at_once(small_catalog, settings):
    old_space, new_space = get_embedder(LITE0).id, get_embedder(LITE2).id
    settings.EMBEDDING_MODEL = LITE2
    sweep.embedding_space_sync()
    # Building: every image is pending for the new model, search still reads the complete old space.
    assert EmbeddingSpace.objects.get(model=new_space).state == EmbeddingSpace.State.BUILDING
    assert not ProductImage.objects.exclude(embedding_status=EmbeddingStatus.PENDING).exists()
    assert search_space_model() == old_space
    assert _neighbour_sku(small_catalog["RUN-1"]) == "RUN-2"

    # Half of the new space is filled: still the old space, never a mix.
    first_half = list(ProductImage.objects.order_by("pk").values_list("pk", flat=True)[:2])
    services.images_embed(image_ids=first_half)
    sweep.embedding_space_sync()
    assert search_space_model() == old_space
    assert _neighbour_sku(small_catalog["RUN-1"]) == "RUN-2"

    call_command("reindex", only="pending", stdout=open("/dev/null", "w"))
    assert search_space_model() == new_space
    assert EmbeddingSpace.objects.get(model=old_space).state == EmbeddingSpace.State.RETIRED
    assert EmbeddingSpace.objects.get(model=new_space).calibrated_vectors == 4  # at the switch, not a sweep later
    assert _neighbour_sku(small_catalog["RUN-1"]) == "RUN-2"
    # The old vectors are freed by the sweep, in bounded batches.
    assert sweep.retired_vectors_delete(limit=3) == 3
    sweep.embedding_sweep()
    assert set(ImageEmbedding.objects.values_list("model", flat=True)) == {new_space}


def test_a_search_kept_before_a_switch_is_not_refined_in_the_new_space(small_catalog, settings, client, test_images):
    """A kept query vector is the old space's: compared with the new space's vectors it would rank nothing alike.
    A refinement by its token asks for the photo again, the page and the API alike."""
    answer = client.post("/api/v1/search/", {"image": uploaded_file(test_images / "shoe-running-3.jpg")})
    token = answer.json()["query"]
    refine = {"data": f"query={token}", "content_type": "application/x-www-form-urlencoded"}
    assert client.post("/api/v1/search/", **refine).status_code == 200  # kept, and usable
    settings.EMBEDDING_MODEL = LITE2
    sweep.embedding_space_sync()
    call_command("reindex", only="pending", stdout=open("/dev/null", "w"))
    assert search_space_model() == get_embedder(LITE2).id
    refused = client.post("/api/v1/search/", **refine)
    assert refused.status_code == 400 and list(refused.json()) == ["query"]
    page = client.get("/search/photo/", {"query": token})
    assert page.status_code == 410 and b"data-expired" in page.content


def test_a_rolling_deploys_old_workers_do_not_keep_the_new_space_from_completing(small_catalog, settings):
    """The sweep runs the new model while workers of the old one still take its tasks: they find the old model's
    vector of each photo and mark it ready. Those photos need a vector in the new space all the same."""
    old_space, new_space = get_embedder(LITE0).id, get_embedder(LITE2).id
    settings.EMBEDDING_MODEL = LITE2
    sweep.embedding_space_sync()
    ids = list(ProductImage.objects.order_by("pk").values_list("pk", flat=True))
    assert services.images_embed(image_ids=ids, embedder=get_embedder(LITE0))["skipped"] == len(ids)  # an old worker
    assert not ProductImage.objects.filter(embedding_status=EmbeddingStatus.PENDING).exists()

    assert sweep.embedding_space_sync().model == old_space
    assert set(ProductImage.objects.values_list("embedding_status", flat=True)) == {EmbeddingStatus.PENDING}

    call_command("reindex", only="pending", stdout=open("/dev/null", "w"))  # what the new workers do with them
    assert search_space_model() == new_space
    assert ImageEmbedding.objects.filter(model=new_space).count() == len(ids)


def test_a_rolling_deploys_old_workers_sweeps_neither_give_up_the_build_nor_make_it_start_over(small_catalog,
                                                                                                settings):
    """Each sweep an old worker ran retired the build and freed its vectors, and the next on a new worker built it
    anew, every photo pending again: back and forth until the last old worker stopped. After the switch, an old
    worker's sweep started a build of its model again."""
    old_space, new_space = get_embedder(LITE0).id, get_embedder(LITE2).id
    settings.EMBEDDING_MODEL = LITE2
    sweep.embedding_space_sync()  # a new worker's sweep
    first_half = list(ProductImage.objects.order_by("pk").values_list("pk", flat=True)[:2])
    services.images_embed(image_ids=first_half)

    settings.EMBEDDING_MODEL = LITE0
    sweep.embedding_sweep()  # an old worker's
    assert EmbeddingSpace.objects.get(model=new_space).state == EmbeddingSpace.State.BUILDING
    assert ImageEmbedding.objects.filter(model=new_space).count() == 2

    settings.EMBEDDING_MODEL = LITE2
    sweep.embedding_sweep()  # a new worker's again
    assert EmbeddingSpace.objects.get(model=new_space).state == EmbeddingSpace.State.BUILDING
    assert set(ProductImage.objects.filter(pk__in=first_half).values_list("embedding_status", flat=True)) == {
        EmbeddingStatus.READY}

    call_command("reindex", only="pending", stdout=open("/dev/null", "w"))  # the switch
    assert search_space_model() == new_space
    settings.EMBEDDING_MODEL = LITE0
    sweep.embedding_sweep()  # an old worker's, after the switch: not a model set back
    assert EmbeddingSpace.objects.get(model=old_space).state == EmbeddingSpace.State.RETIRED
    assert not ProductImage.objects.filter(embedding_status=EmbeddingStatus.PENDING).exists()


def test_setting_the_model_back_before_its_space_is_built_retires_that_build(small_catalog, settings):
    old_space, new_space = get_embedder(LITE0).id, get_embedder(LITE2).id
    settings.EMBEDDING_MODEL = LITE2
    sweep.embedding_space_sync()
    services.images_embed(image_ids=list(ProductImage.objects.values_list("pk", flat=True)[:2]))

    settings.EMBEDDING_MODEL = LITE0  # rolled back
    assert sweep.embedding_sweep()["space"] == old_space
    # Workers of the new model may still be running (see the rolling deploy below): not given up yet ...
    assert EmbeddingSpace.objects.get(model=new_space).state == EmbeddingSpace.State.BUILDING
    EmbeddingSpace.objects.filter(model=new_space).update(  # ... until none has synced for a while
        configured_seen_at=timezone.now() - sweep._build_abandoned_after() - timedelta(seconds=1))
    assert sweep.embedding_sweep()["space"] == old_space
    assert EmbeddingSpace.objects.get(model=new_space).state == EmbeddingSpace.State.RETIRED
    assert not ImageEmbedding.objects.filter(model=new_space).exists()  # its vectors freed by the same sweep

    settings.EMBEDDING_MODEL = LITE2  # and deployed again: built anew, then switched to
    sweep.embedding_space_sync()
    assert EmbeddingSpace.objects.get(model=new_space).state == EmbeddingSpace.State.BUILDING
    call_command("reindex", only="pending", stdout=open("/dev/null", "w"))
    assert search_space_model() == new_space


def test_a_build_given_up_leaves_every_photo_searchable_or_on_its_way(small_catalog, settings):
    """A photo the build's worker marked ready whose vector in the searched space could not be made stayed "ready"
    and out of search for good once the build was given up; one that failed in the build only stayed failed."""
    old_space, new_space = get_embedder(LITE0).id, get_embedder(LITE2).id
    settings.EMBEDDING_MODEL = LITE2
    sweep.embedding_space_sync()
    uploaded, failed = ProductImage.objects.order_by("pk")[:2]
    services.images_embed(image_ids=[uploaded.pk])  # ready, by the new model's worker ...
    ImageEmbedding.objects.filter(image=uploaded, model=old_space).delete()  # ... whose fill of the old space failed
    services.image_embedding_fail(image_id=failed.pk, error="ModelUnavailable: the new model's file")

    settings.EMBEDDING_MODEL = LITE0  # set back, and the build given up
    EmbeddingSpace.objects.filter(model=new_space).update(
        configured_seen_at=timezone.now() - sweep._build_abandoned_after() - timedelta(seconds=1))
    sweep.embedding_space_sync()
    assert EmbeddingSpace.objects.get(model=new_space).state == EmbeddingSpace.State.RETIRED
    uploaded.refresh_from_db(), failed.refresh_from_db()
    assert uploaded.embedding_status == EmbeddingStatus.PENDING
    assert (failed.embedding_status, failed.embedding_error) == (EmbeddingStatus.READY, "")
    call_command("reindex", only="pending", stdout=open("/dev/null", "w"))
    assert ImageEmbedding.objects.filter(image=uploaded, model=old_space).exists()
    assert set(ProductImage.objects.values_list("embedding_status", flat=True)) == {EmbeddingStatus.READY}


def test_photos_added_or_replaced_while_a_new_space_builds_are_searchable_at_once(small_catalog, settings,
                                                                                    test_images, client):
    """Search reads the old space until the new one is complete, which can take hours: a product added meanwhile,
    or a photo replaced, gets a vector there too, not only in the space being built."""
    old_space, new_space = get_embedder(LITE0).id, get_embedder(LITE2).id
    settings.EMBEDDING_MODEL = LITE2
    sweep.embedding_space_sync()
    shoes = small_catalog["RUN-1"].category
    added = catalog_services.product_create(sku="RUN-NEW", title="New runner", category=shoes, price="10")
    photo = catalog_services.product_image_add(product=added, file=uploaded_file(test_images / "shoe-running-3.jpg"))
    replaced = small_catalog["CHAIR-1"].images.get()
    catalog_services.product_image_update(image=replaced, file=uploaded_file(test_images / "chair-cafe-pair.jpg"))

    services.images_embed(image_ids=[photo.pk, replaced.pk])  # the task the uploads queued

    for image in (photo, replaced):
        assert set(ImageEmbedding.objects.filter(image=image).values_list("model", flat=True)) == {old_space,
                                                                                                  new_space}
        image.refresh_from_db()
        assert image.embedding_status == EmbeddingStatus.READY and image.embedding_model == new_space
    assert search_space_model() == old_space
    answer = client.post("/api/v1/search/", {"image": uploaded_file(test_images / "shoe-running-3.jpg")})
    assert answer.json()["model"] == old_space and answer.json()["results"][0]["product"]["sku"] == "RUN-NEW"
    answer = client.post("/api/v1/search/", {"image": uploaded_file(test_images / "chair-cafe-pair.jpg")})
    assert answer.json()["results"][0]["product"]["sku"] == "CHAIR-1"


def test_a_photo_whose_file_went_meanwhile_leaves_the_others_of_its_batch_searchable_while_a_space_builds(
    small_catalog, settings, test_images
):
    """One photo of a batch deleted or replaced (its old file deleted) while the active space's model loaded: its
    file could not be opened, which failed the whole batch there: no photo of it searchable until the switch."""
    old_space = get_embedder(LITE0).id
    settings.EMBEDDING_MODEL = LITE2
    sweep.embedding_space_sync()
    added = catalog_services.product_create(sku="RUN-NEW", title="New runner", category=small_catalog["RUN-1"].category,
                                            price="10")
    gone, kept = (catalog_services.product_image_add(product=added, file=uploaded_file(test_images / name))
                  for name in ("shoe-running-3.jpg", "shoe-running-1.jpg"))
    gone.file.storage.delete(gone.file.name)

    services._searched_space_fill(image_ids=[gone.pk, kept.pk], building=get_embedder(LITE2).id)

    assert list(ImageEmbedding.objects.filter(model=old_space, image__in=[gone, kept]).values_list(
        "image_id", flat=True)) == [kept.pk]


def test_a_photo_whose_first_run_ended_before_the_searched_space_had_its_vector_gets_it_on_the_retry(
    small_catalog, settings, test_images, monkeypatch
):
    """The retry found the new space's vector, skipped the photo and marked it ready: it had no vector in the
    space search reads until the switch, unsearchable for hours."""
    from django.db import OperationalError

    old_space, new_space = get_embedder(LITE0).id, get_embedder(LITE2).id
    settings.EMBEDDING_MODEL = LITE2
    sweep.embedding_space_sync()
    added = catalog_services.product_create(sku="RUN-NEW", title="New runner", category=small_catalog["RUN-1"].category,
                                            price="10")
    photo = catalog_services.product_image_add(product=added, file=uploaded_file(test_images / "shoe-running-3.jpg"))
    flag = services.images_near_duplicate_flag

    def lost_connection(**kwargs):
        flag(**kwargs)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services, "images_near_duplicate_flag", lost_connection)
    with pytest.raises(OperationalError):
        services.images_embed(image_ids=[photo.pk])
    monkeypatch.undo()
    assert set(ImageEmbedding.objects.filter(image=photo).values_list("model", flat=True)) == {new_space}

    assert services.images_embed(image_ids=[photo.pk])["skipped"] == 1  # the task's retry

    assert set(ImageEmbedding.objects.filter(image=photo).values_list("model", flat=True)) == {old_space, new_space}


def test_a_photo_an_old_worker_takes_after_the_switch_stays_pending_for_a_worker_of_the_new_model(
    small_catalog, settings, test_images, monkeypatch
):
    """In a rolling deploy a worker of the model search switched from stored its vector in the retired space (freed
    by the sweep) and marked the photo ready: out of search for good, where it cannot compute the new model's."""
    from search import query

    new_space = get_embedder(LITE2).id
    settings.EMBEDDING_MODEL = LITE2
    sweep.embedding_space_sync()
    call_command("reindex", only="pending", stdout=open("/dev/null", "w"))
    assert search_space_model() == new_space
    image = catalog_services.product_image_add(product=small_catalog["RUN-1"],
                                               file=uploaded_file(test_images / "shoe-running-2.jpg"))

    def unknown_to_the_old_code(model):
        raise LookupError(model)

    monkeypatch.setattr(query, "embedder_for_model", unknown_to_the_old_code)
    services.images_embed(image_ids=[image.pk], embedder=get_embedder(LITE0))  # the old worker
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.PENDING
    monkeypatch.undo()

    services.images_embed(image_ids=[image.pk])  # a worker of the new model, sent it by the sweep
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.READY
    assert ImageEmbedding.objects.filter(image=image, model=new_space).exists()


def test_an_old_worker_finding_its_retired_vector_does_not_mark_the_photo_ready(small_catalog, settings):
    """Its vector in the space search switched from is not yet freed: the photo was marked ready on it."""
    old_space, new_space = get_embedder(LITE0).id, get_embedder(LITE2).id
    settings.EMBEDDING_MODEL = LITE2
    sweep.embedding_space_sync()
    call_command("reindex", only="pending", stdout=open("/dev/null", "w"))
    image = ProductImage.objects.order_by("pk").first()
    ImageEmbedding.objects.filter(image=image, model=new_space).delete()  # as if replaced, say: not searchable
    ProductImage.objects.filter(pk=image.pk).update(embedding_status=EmbeddingStatus.PENDING)
    assert ImageEmbedding.objects.filter(image=image, model=old_space).exists()

    assert services.images_embed(image_ids=[image.pk], embedder=get_embedder(LITE0))["skipped"] == 1
    image.refresh_from_db()
    assert image.embedding_status == EmbeddingStatus.PENDING


def test_product_pages_keep_more_like_this_and_its_refinements_while_a_new_space_builds(
    small_catalog, settings, client
):
    settings.EMBEDDING_MODEL = LITE2
    sweep.embedding_space_sync()
    assert not ProductImage.objects.exclude(embedding_status=EmbeddingStatus.PENDING).exists()
    page = client.get(small_catalog["RUN-1"].get_absolute_url())
    assert small_catalog["RUN-2"].get_absolute_url().encode() in page.content  # from the old space's vectors
    assert b"data-refine-form" in page.content
    assert b"Similar products appear once" not in page.content


def test_a_new_model_that_cannot_load_never_replaces_the_searchable_space(small_catalog, settings, tmp_path):
    """Images that failed in the new space are processed, but switching to it would drop them out of search and the
    sweep would then free their old vectors: search stays on the old space until the failures are redone."""
    old_space, new_space = get_embedder(LITE0).id, get_embedder(LITE2).id
    damaged = tmp_path / "lite2.pth"  # a weights file cut short (a broken install, a full disk)
    damaged.write_bytes(Path(get_embedder(LITE2).weights_path()).read_bytes()[:4096])

    class DamagedLite2(EfficientNetLite2):
        def weights_path(self):
            return str(damaged)

    settings.EMBEDDING_MODEL = LITE2
    sweep.embedding_space_sync()
    ids = list(ProductImage.objects.values_list("pk", flat=True))
    assert services.images_embed(image_ids=ids, embedder=DamagedLite2(cache_dir=tmp_path))["failed"] == len(ids)
    assert not ProductImage.objects.filter(embedding_status=EmbeddingStatus.PENDING).exists()

    for _ in range(2):  # the switch is due on every sweep: none may take it
        assert sweep.embedding_sweep()["space"] == old_space
    assert EmbeddingSpace.objects.get(model=new_space).state == EmbeddingSpace.State.BUILDING
    assert ImageEmbedding.objects.filter(model=old_space).count() == len(ids)
    assert _neighbour_sku(small_catalog["RUN-1"]) == "RUN-2"

    # The configured model loads in the sweep (only this test's copy was damaged): it sent the photos back
    assert set(ProductImage.objects.values_list("embedding_status", flat=True)) == {EmbeddingStatus.PENDING}
    call_command("reindex", only="pending", stdout=open("/dev/null", "w"))  # what the workers then do
    assert search_space_model() == new_space


def test_photo_search_answers_from_the_previous_versions_space_while_the_new_one_builds(small_catalog, client,
                                                                                        test_images):
    """Version 4 of the network only added the detail map to the graph: it computes version 3's vectors bit for bit,
    so an install upgraded from 3 searches by photo in its old space until the new one, with details, is complete."""
    embedder = get_embedder(LITE0)
    old_space = embedder.query_ids[1]
    assert old_space == embedder.id.replace("-v4-", "-v3-")
    ImageEmbedding.objects.update(model=old_space, details=None)  # what version 3 stored
    EmbeddingSpace.objects.update(model=old_space)

    assert sweep.embedding_sweep()["space"] == old_space  # the new space is building
    photo = {"image": uploaded_file(test_images / "shoe-running-2.jpg")}
    during = client.post("/api/v1/search/", photo)
    assert during.status_code == 200 and during.json()["model"] == old_space
    assert during.json()["results"][0]["product"]["sku"] == "RUN-2"

    services.images_embed(image_ids=list(ProductImage.objects.values_list("pk", flat=True)))
    assert sweep.embedding_sweep()["space"] == embedder.id
    after = client.post("/api/v1/search/", {"image": uploaded_file(test_images / "shoe-running-2.jpg")})
    assert after.json()["model"] == embedder.id
    assert after.json()["results"][0]["similarity"] == during.json()["results"][0]["similarity"]  # the same vectors
    assert not ImageEmbedding.objects.filter(details=None).exists()


def test_photo_search_answers_from_the_int8_space_while_a_float32_one_builds(small_catalog, settings, client,
                                                                            test_images):
    """EMBEDDING_RUNTIME changed: the int8 vectors stay searchable, embedded by the int8 network the same code still
    runs, until the float32 space is complete."""
    from search import embeddings

    int8_space = get_embedder(LITE0).id
    settings.EMBEDDING_RUNTIME = "onnx"
    embeddings.get_embedder.cache_clear()
    try:
        assert get_embedder(LITE0).id != int8_space
        sweep.embedding_space_sync()
        assert EmbeddingSpace.objects.get(model=get_embedder(LITE0).id).state == EmbeddingSpace.State.BUILDING
        answer = client.post("/api/v1/search/", {"image": uploaded_file(test_images / "shoe-running-2.jpg")})
        assert answer.status_code == 200, answer.content[:300]
        assert answer.json()["model"] == int8_space
        assert answer.json()["results"][0]["product"]["sku"] == "RUN-2"
    finally:
        embeddings.get_embedder.cache_clear()
        embeddings.earlier_embedder.cache_clear()


def test_interrupted_reindex_resumes_with_only_pending(small_catalog):
    ids = list(ProductImage.objects.order_by("pk").values_list("pk", flat=True))
    # A run that crashed after its first batch: the selection was marked pending, one batch stored.
    ProductImage.objects.update(embedding_status=EmbeddingStatus.PENDING)
    services.images_embed(image_ids=ids[:1], force=True)
    times_before = dict(ProductImage.objects.values_list("pk", "embedded_at"))

    call_command("reindex", only="pending", stdout=open("/dev/null", "w"))

    times_after = dict(ProductImage.objects.values_list("pk", "embedded_at"))
    assert not ProductImage.objects.exclude(embedding_status=EmbeddingStatus.READY).exists()
    assert times_after[ids[0]] == times_before[ids[0]]  # done before the crash: not redone
    assert all(times_after[pk] > times_before[pk] for pk in ids[1:])  # the rest: recomputed now
    assert ImageEmbedding.objects.count() == len(ids)


def test_the_photos_a_dead_reindex_left_are_recomputed_by_the_workers_the_sweep_sends_them_to(small_catalog):
    """A reindex claims its selection (pending) and dies after a batch; once the claim lapses the sweep sends the
    rest to the workers, who found each photo's vector and marked it ready: the recompute asked for was lost."""
    ids = list(ProductImage.objects.order_by("pk").values_list("pk", flat=True))
    ImageEmbedding.objects.update(details=None)  # stale: stored before the details were kept, say
    services.images_recompute_claim(image_ids=ids)
    services.images_embed(image_ids=ids[:1], force=True)  # its first batch; then it was killed
    outcome = services.images_embed(image_ids=ids)  # the workers' task, as the sweep sends it (no force)
    assert outcome["embedded"] == len(ids) - 1
    assert not ImageEmbedding.objects.filter(details=None).exists()
    assert set(ProductImage.objects.values_list("embedding_status", flat=True)) == {EmbeddingStatus.READY}


def test_the_sweep_leaves_a_running_reindexs_selection_to_it(small_catalog, monkeypatch, settings):
    """The selection is pending while the run works through it: the sweep, running meanwhile, must not send it to
    the workers, who would do the same work, or mark ready without the recompute photos with a vector."""
    from search.management.commands import reindex

    embedding_queue(settings.CELERY_BROKER_URL)  # empty: the sweep would send photos queued long ago too
    swept, embed = [], reindex.images_embed

    def sweep_then_embed(**kwargs):
        swept.append(services.pending_images_requeue())  # the beat sweep, between two batches
        return embed(**kwargs)

    monkeypatch.setattr(reindex, "images_embed", sweep_then_embed)
    call_command("reindex", batch_size=1, stdout=open("/dev/null", "w"))
    assert swept == [0, 0, 0, 0]
    assert set(ProductImage.objects.values_list("embedding_status", flat=True)) == {EmbeddingStatus.READY}


def test_a_long_reindex_renews_its_claim_before_the_sweep_counts_its_selection_as_lost(
    small_catalog, monkeypatch, settings
):
    from django.utils import timezone

    from search.management.commands import reindex

    embedding_queue(settings.CELERY_BROKER_URL)  # empty: the sweep then sends photos whose claim has lapsed
    swept, embed = [], reindex.images_embed
    long_ago = timezone.now() - timezone.timedelta(seconds=2 * services.PENDING_STALE_SECONDS)

    def sweep_then_a_long_batch(**kwargs):
        swept.append(services.pending_images_requeue())
        outcome = embed(**kwargs)
        ProductImage.objects.filter(embedding_status=EmbeddingStatus.PENDING).update(embedding_queued_at=long_ago)
        return outcome

    monkeypatch.setattr(reindex, "images_embed", sweep_then_a_long_batch)
    monkeypatch.setattr(reindex, "CLAIM_RENEW_SECONDS", 0)  # every batch takes longer than the renewal period
    call_command("reindex", batch_size=1, stdout=open("/dev/null", "w"))
    assert swept == [0, 0, 0, 0]
    assert set(ProductImage.objects.values_list("embedding_status", flat=True)) == {EmbeddingStatus.READY}


def test_reindex_of_one_category_leaves_the_others_alone(small_catalog):
    from catalog.models import Category

    before = dict(ProductImage.objects.values_list("pk", "embedded_at"))
    ImageEmbedding.objects.all().delete()  # force real work
    call_command("reindex", category=Category.objects.get(name="Clothing").slug, stdout=open("/dev/null", "w"))
    after = dict(ProductImage.objects.values_list("pk", "embedded_at"))
    changed = {pk for pk in before if before[pk] != after[pk]}
    shoe_images = set(ProductImage.objects.filter(product__sku__startswith="RUN").values_list("pk", flat=True))
    assert changed == shoe_images


def test_reindex_rejects_unknown_category_and_status(small_catalog):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="Unknown category 'nope'"):
        call_command("reindex", category="nope")
    with pytest.raises(CommandError, match="unknown status"):
        call_command("reindex", only="sideways")
    with pytest.raises(CommandError, match="--only needs a status"):  # it selected nothing and said "Done"
        call_command("reindex", only=",")
    for timeout in ("nan", "inf", "0"):  # a run that never gives up, or at once
        with pytest.raises(CommandError, match="--timeout must be a number of seconds more than 0"):
            call_command("reindex", "--background", "--timeout", timeout)


def test_reindex_exits_with_status_1_naming_the_failures_and_how_to_retry(small_catalog):
    """"Done. 1 failed." with status 0 let a script (or an operator's `&&`) take a run that left a photo out of search
    for a success."""
    from django.core.management.base import CommandError

    damaged = ProductImage.objects.get(product=small_catalog["RUN-2"])
    with damaged.file.storage.open(damaged.file.name, "wb") as handle:
        handle.write(b"GIF89a truncated")
    shoes = small_catalog["RUN-2"].category.parent.slug

    with pytest.raises(CommandError) as failed:
        call_command("reindex", category=shoes, stdout=open("/dev/null", "w"))
    assert failed.value.returncode == 1
    assert str(failed.value).startswith("1 of 2 image(s) failed")
    assert f"manage.py reindex --only failed --category {shoes}" in str(failed.value)
    assert ProductImage.objects.get(pk=damaged.pk).embedding_status == EmbeddingStatus.FAILED


class _FakeClock:
    """``time`` for reindex's watch: each sleep passes at once. ``every`` seconds, ``tick`` runs (a worker that
    finishes an image); a watch still going after an hour fails the test instead of hanging it."""

    def __init__(self, *, every=None, tick=None):
        self.now, self.every, self.tick, self.ticked = 0.0, every, tick, 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        if self.every and self.now - self.ticked >= self.every:
            self.ticked = self.now
            self.tick()
        assert self.now < 3600, "reindex --background still watching after an hour"


@pytest.fixture
def no_worker(settings):
    """The test broker's queue, with no worker taking from it; emptied again afterwards."""
    embedding_queue(settings.CELERY_BROKER_URL)
    yield
    embedding_queue(settings.CELERY_BROKER_URL)


def test_reindex_in_the_background_gives_up_when_no_worker_finishes_an_image(small_catalog, monkeypatch, no_worker):
    """It watched a dead worker for ever. Now it gives up after --timeout seconds without progress (600 unless
    given), with status 1; the images stay pending for the workers."""
    from django.core.management.base import CommandError

    from search.management.commands import reindex

    clock = _FakeClock()
    monkeypatch.setattr(reindex, "time", clock)
    with pytest.raises(CommandError, match="no image finished in 600 s: are the Celery workers running") as gave_up:
        call_command("reindex", background=True, stdout=open("/dev/null", "w"), stderr=open("/dev/null", "w"))
    assert gave_up.value.returncode == 1 and "4 of 4 image(s) are still pending" in str(gave_up.value)
    assert 600 <= clock.now < 602

    clock = _FakeClock()
    monkeypatch.setattr(reindex, "time", clock)
    with pytest.raises(CommandError, match="no image finished in 30 s"):
        call_command("reindex", background=True, timeout=30, stdout=open("/dev/null", "w"))
    assert 30 <= clock.now < 32


def test_reindex_in_the_background_says_once_that_the_queue_does_not_answer(small_catalog, monkeypatch, no_worker):
    """It asked the broker every second and logged a traceback each time, then blamed the workers."""
    import io

    from django.core.management.base import CommandError

    from search import services
    from search.management.commands import reindex

    monkeypatch.setattr(services, "_queued_tasks", lambda: None)
    monkeypatch.setattr(reindex, "time", _FakeClock())
    err = io.StringIO()
    with pytest.raises(CommandError, match="no image finished in 30 s"):
        call_command("reindex", background=True, timeout=30, stdout=open("/dev/null", "w"), stderr=err)
    assert err.getvalue().count("The task queue does not answer: 4 image(s) wait to be sent") == 1


def test_reindex_in_the_background_waits_on_while_the_workers_make_progress(small_catalog, monkeypatch, no_worker):
    """The bound is on a stall, not on the whole run: a large catalog takes the workers hours."""
    from search.management.commands import reindex

    def a_worker_finishes_an_image():
        image = ProductImage.objects.filter(embedding_status=EmbeddingStatus.PENDING).order_by("pk").first()
        ProductImage.objects.filter(pk=image.pk).update(embedding_status=EmbeddingStatus.READY,
                                                        embedding_model=get_embedder(LITE0).id)

    clock = _FakeClock(every=500, tick=a_worker_finishes_an_image)
    monkeypatch.setattr(reindex, "time", clock)
    call_command("reindex", background=True, stdout=open("/dev/null", "w"))  # no error: status 0
    assert clock.now == 2000  # four images, each 500 s after the one before, with 600 s allowed for each
    assert not ProductImage.objects.exclude(embedding_status=EmbeddingStatus.READY).exists()


def test_reindex_in_the_background_keeps_the_queue_as_short_as_the_sweep_does(small_catalog, monkeypatch, no_worker,
                                                                              settings):
    """It sent the whole selection at once: behind 3,000 tasks for 100k photos every beat task expired unrun for the
    forty minutes they took (no sweep, no switch, /healthz late). It tops the queue up as the workers take from it."""
    import base64
    import json

    import redis

    from search import services
    from search.management.commands import reindex

    monkeypatch.setattr(services, "SWEEP_QUEUE_MAX_TASKS", 2)
    monkeypatch.setattr(services, "TASK_BATCH_SIZE", 1)  # room for two photos
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    waiting = []  # the photos in the queue each time a worker takes a task

    def a_worker_takes_a_task():
        messages = [json.loads(raw) for raw in broker.lrange("celery", 0, -1)]
        waiting.append(sum(len(json.loads(base64.b64decode(m["body"]))[0][0]) for m in messages))
        taken = json.loads(base64.b64decode(json.loads(broker.rpop("celery"))["body"]))[0][0]  # the oldest
        ProductImage.objects.filter(pk__in=taken).update(embedding_status=EmbeddingStatus.READY,
                                                         embedding_model=get_embedder(LITE0).id)

    clock = _FakeClock(every=60, tick=a_worker_takes_a_task)
    monkeypatch.setattr(reindex, "time", clock)
    call_command("reindex", background=True, stdout=open("/dev/null", "w"))

    assert waiting == [2, 2, 2, 1]  # four photos, two at a time in the queue, then the last one
    assert not ProductImage.objects.exclude(embedding_status=EmbeddingStatus.READY).exists()


def test_a_switch_before_any_sync_keeps_the_stored_space_active(small_catalog, settings):
    EmbeddingSpace.objects.all().delete()  # vectors exist, but no sweep has recorded their space yet
    settings.EMBEDDING_MODEL = LITE2
    assert sweep.embedding_space_sync().model == get_embedder(LITE0).id
    assert EmbeddingSpace.objects.get(model=get_embedder(LITE2).id).state == EmbeddingSpace.State.BUILDING
    assert _neighbour_sku(small_catalog["RUN-1"]) == "RUN-2"


def test_an_upgraded_pipeline_rebuilds_in_the_background_while_search_answers(small_catalog):
    """An install upgraded from a release whose vectors have another id (here the old learned-whitening space):
    the stored space keeps answering while the new pipeline's vectors are built, then search switches and the
    new space is calibrated in the same sweep."""
    old_space = "efficientnet-lite0-v2p3-lw384-4ce6bc70"
    ImageEmbedding.objects.update(model=old_space)  # what the previous release stored
    EmbeddingSpace.objects.update(model=old_space)
    new_space = get_embedder(LITE0).id

    assert sweep.embedding_sweep()["space"] == old_space
    assert EmbeddingSpace.objects.get(model=new_space).state == EmbeddingSpace.State.BUILDING
    assert search_space_model() == old_space
    assert _neighbour_sku(small_catalog["RUN-1"]) == "RUN-2"  # answered from the old vectors

    services.images_embed(image_ids=list(ProductImage.objects.values_list("pk", flat=True)))
    assert sweep.embedding_sweep()["space"] == new_space
    assert search_space_model() == new_space
    assert EmbeddingSpace.objects.get(model=new_space).calibrated_vectors == 4
    assert _neighbour_sku(small_catalog["RUN-1"]) == "RUN-2"
    assert set(ImageEmbedding.objects.values_list("model", flat=True)) == {new_space}  # old vectors freed


# --- updates of many rows against writers of a few ---


def _rows_locked(model, pk):
    list(model.objects.select_for_update().filter(pk=pk).values_list("pk"))


@pytest.mark.django_db(transaction=True)
def test_a_builds_update_of_every_photo_waits_for_a_writer_holding_some_instead_of_deadlocking(small_catalog,
                                                                                             settings):
    """The update locked photos in the order its scan met them, an admin's delete in pk order: each held a photo the
    other wanted next, and PostgreSQL failed one of them."""
    first, second, *_ = sorted(ProductImage.objects.values_list("pk", flat=True))
    ProductImage.objects.filter(pk=first).update(embedding_error="")  # its row now lies after the second's
    settings.EMBEDDING_MODEL = LITE2
    with held_in_another_transaction(lambda: _rows_locked(ProductImage, first),
                                     then=lambda: _rows_locked(ProductImage, second)) as held:
        sweep.embedding_space_sync()  # a build starts: every photo pending
    assert held.waited
    assert set(ProductImage.objects.values_list("embedding_status", flat=True)) == {EmbeddingStatus.PENDING}


@pytest.mark.django_db(transaction=True)
def test_freeing_retired_vectors_leaves_those_a_writer_holds_for_the_next_sweep(small_catalog, settings):
    old_space = get_embedder(LITE0).id
    settings.EMBEDDING_MODEL = LITE2
    sweep.embedding_space_sync()
    call_command("reindex", only="pending", stdout=open("/dev/null", "w"))
    retired = sorted(ImageEmbedding.objects.filter(model=old_space).values_list("pk", flat=True))
    with held_in_another_transaction(lambda: _rows_locked(ImageEmbedding, retired[0]), timeout=2) as held:
        assert sweep.retired_vectors_delete() == len(retired) - 1
    assert not held.waited
    assert sweep.retired_vectors_delete() == 1
