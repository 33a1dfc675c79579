from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import NestedObjects
from django.contrib.admin.widgets import AdminFileWidget
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import OperationalError, router, transaction
from django.db.models import Case, Count, Q, When
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator, capfirst
from psycopg.errors import DeadlockDetected

from catalog.categories import CategoryPaths
from catalog.forms import CurrencyField
from catalog.models import POSITION_MAX, Category, EmbeddingStatus, Product, ProductImage
from catalog.services import (
    categories_delete,
    category_save,
    files_deleted_if_it_fails,
    image_prepare,
    product_create,
    product_image_add,
    product_image_delete,
    product_image_update,
    product_images_add,
    product_images_delete,
    product_images_reembed,
    product_photos_hold,
    product_update,
    products_delete,
    products_set_active,
)
from config.middleware import ADMIN_FILES_PER_REQUEST

ERROR_SHOWN = 80  # characters of an embedding error shown in lists (the whole of it on the photo's page)
STATUS_COLOURS = {EmbeddingStatus.PENDING: "#b7791f", EmbeddingStatus.READY: "#2f855a", EmbeddingStatus.FAILED: "#c53030"}


def thumbnail(image: ProductImage | None, height: int = 56) -> str:
    if image is None or not image.file:
        return "—"
    return format_html(
        '<img src="{}" alt="" style="height:{}px;width:{}px;object-fit:contain;background:#fff;'
        'border:1px solid #ddd;border-radius:4px">',
        image.card_url, height, height,  # the small copy: a list of originals loaded megabytes each, HEIC not at all
    )


def status_badge(image: ProductImage, *, why: bool = False) -> str:
    """The photo's embedding status; with ``why``, a failure's reason under it (a badge's hover text alone cannot be
    read on a touch screen or from the keyboard)."""
    badge = format_html(
        '<span title="{}" style="color:#fff;background:{};padding:2px 8px;border-radius:10px;font-size:11px">{}</span>',
        image.embedding_error or image.embedding_model, STATUS_COLOURS[image.embedding_status],
        image.get_embedding_status_display(),
    )
    if why and image.embedding_status == EmbeddingStatus.FAILED and image.embedding_error:
        return format_html('{}<br><small>{}</small>', badge, Truncator(image.embedding_error).chars(ERROR_SHOWN))
    return badge


def near_duplicate(image: ProductImage) -> str:
    other = image.near_duplicate_of
    if other is None:
        return "—"
    return format_html(
        '<span style="color:#c05621;font-weight:600">⚠ {} like</span> <a href="{}">{} (image {})</a>',
        f"{image.near_duplicate_score:.0%}", reverse("admin:catalog_product_change", args=[other.product_id]),
        other.product.sku, other.position,
    )


class RefusedSavesShown(admin.ModelAdmin):
    """The services check again under their locks what the form checked before: a SKU or a category name another
    admin took meanwhile, a category moved under this one, a product deleted while its photos uploaded, a category
    given a product while it was deleted. Such a refusal is shown on the page as a message, the change undone, where
    Django's admin let it through as an error page."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return self._refusal_shown(request, "Nothing was saved", super().changeform_view, request, object_id,
                                   form_url, extra_context)

    def delete_view(self, request, object_id, extra_context=None):
        return self._refusal_shown(request, "Nothing was deleted", super().delete_view, request, object_id,
                                   extra_context)

    def changelist_view(self, request, extra_context=None):  # its actions: "Delete selected"
        return self._refusal_shown(request, "Nothing was changed", super().changelist_view, request, extra_context)

    def response_action(self, request, queryset):
        # In one transaction: "Delete selected" logs the deletions before it deletes, and a refusal would keep them.
        with transaction.atomic(using=router.db_for_write(self.model)):
            return super().response_action(request, queryset)

    def _refusal_shown(self, request, outcome, view, *args):
        try:
            with files_deleted_if_it_fails():  # the files of photos saved before the refusal: their rows are gone
                return view(*args)
        except (ValidationError, Product.DoesNotExist, ProductImage.DoesNotExist, OperationalError) as error:
            deadlock = isinstance(error, OperationalError) and isinstance(error.__cause__, DeadlockDetected)
            if request.method != "POST" or (isinstance(error, OperationalError) and not deadlock):
                raise
            reason = ("; ".join(error.messages) if isinstance(error, ValidationError)
                      else "another change to the same rows was being saved at that moment, try again" if deadlock
                      else "something it refers to was deleted meanwhile")
            self.message_user(request, f"{outcome}: {reason}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


class ProductImageForm(forms.ModelForm):
    """Checks an upload; catalog.services stores it (with its thumbnail), the admin classes below call them."""

    # A plain file field: inspect_image decides by decoding, with messages that name the limits. Django's
    # ImageField would refuse a photo by its name ("IMG_1234", "photo.jpeg.txt") and a bomb with a vague message.
    file = forms.FileField(widget=AdminFileWidget)
    position = forms.IntegerField(
        required=False, min_value=0, max_value=POSITION_MAX, help_text="Empty: after the product's other photos."
    )

    class Meta:
        model = ProductImage
        fields = ["product", "file", "position"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # What the admin saw is sent back beside each field (as ProductForm does), so that ``changed_data`` names only
        # what they changed: a file replaced moved the photo back to the product and position the page showed,
        # undoing another admin's move or reordering meanwhile.
        for name in ("product", "position"):
            if name in self.fields:
                self.fields[name].show_hidden_initial = True
        if self.instance.pk is None:  # a new photo: empty, not the model's 0, which would put it first
            self.initial.pop("position", None)
        else:  # emptied, a photo's position was left as it was, while the admin said it changed
            self.fields["position"].required = True
            self.fields["position"].help_text = "0 is the product's cover photo."

    prepared = None  # the new upload, checked and thumbnailed (decoded once), for the service to store

    def clean_file(self):
        file = self.cleaned_data["file"]
        if isinstance(file, UploadedFile):  # a new upload, not the stored file
            self.prepared = image_prepare(file)
        return file


def _changed(form, name: str):
    """The value of field ``name`` if the admin changed it on the page, else None (the service keeps what is
    stored)."""
    return form.cleaned_data[name] if name in form.changed_data else None


class ProductImageFormSet(forms.BaseInlineFormSet):
    def _construct_form(self, i, **kwargs):
        form = super()._construct_form(i, **kwargs)
        # A photo another admin deleted or moved while this page was open comes back as a row without one: its file
        # is not asked for ("This field is required" beside a photo that had one), the formset says what happened.
        form.photo_gone = i < self.initial_form_count() and form.instance.pk is None
        if form.photo_gone:
            form.fields["file"].required = False
        return form

    def clean(self):
        super().clean()
        # Such a row is in error by its hidden id alone: the page said "Please correct the errors below" and showed
        # none.
        if any(form.photo_gone and not (self.can_delete and self._should_delete_form(form))
               for form in self.initial_forms):
            raise ValidationError("A photo on this page was deleted or moved to another product meanwhile: reload "
                                  "the page to see the product's photos as they are now.", code="photo_gone")
        self._copies_refuse()

    def _copies_refuse(self):
        """A file that is one of the product's pictures already, as the save comes to it (deletions, then the photos
        replaced in pk order, then the new ones: ProductAdmin.save_formset), is said beside it, before anything is
        saved; the services refuse it too, but as a message that loses the page's edits."""
        kept = [form for form in self.forms if not (self.can_delete and self._should_delete_form(form))]
        pictures = {form.instance.pk: form.instance.content_hash for form in kept if form.instance.pk}
        replaced = sorted((form for form in kept if form.instance.pk and form.prepared), key=lambda f: f.instance.pk)
        added = [form for form in kept if not form.instance.pk and form.prepared]
        for form in [*replaced, *added]:
            picture = form.prepared.info.sha256
            if picture in (held for pk, held in pictures.items() if pk != form.instance.pk):
                form.add_error("file", "This photo is on the product already.")
            pictures[form.instance.pk or id(form)] = picture


class ProductImageInline(admin.TabularInline):
    model = ProductImage
    form = ProductImageForm
    formset = ProductImageFormSet
    extra = 2
    # One save takes a few new photos (config/middleware.py RequestBodyLimitMiddleware): said where they are added.
    verbose_name_plural = f"Photos (at most {ADMIN_FILES_PER_REQUEST} new ones per save)"
    fields = ["preview", "file", "position", "size", "embedding", "duplicate"]
    readonly_fields = ["preview", "size", "embedding", "duplicate"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("near_duplicate_of__product")

    @admin.display(description="Near-duplicate of")
    def duplicate(self, obj):
        return near_duplicate(obj) if obj.pk else "—"

    @admin.display(description="Preview")
    def preview(self, obj):
        return thumbnail(obj if obj.pk else None, height=72)

    @admin.display(description="Size")
    def size(self, obj):
        return f"{obj.width}×{obj.height}" if obj.pk else "—"

    @admin.display(description="Embedding")
    def embedding(self, obj):
        return status_badge(obj, why=True) if obj.pk else "—"


def queue_down_notice(request):
    """Tells the admin when the task queue (Redis) could not take the work: nothing is lost, the images are
    saved as pending and the periodic sweep queues them once the broker answers again."""

    def notice(count: int) -> None:
        messages.warning(
            request,
            f"The images are saved, but the task queue cannot be reached right now: embedding of {count} "
            "image(s) will start automatically when it is back. Nothing needs to be uploaded or asked for again.",
        )

    return notice


def _reembed(modeladmin, request, image_ids):
    count = product_images_reembed(image_ids=image_ids, on_not_queued=queue_down_notice(request))
    # "Queued" was not true with the task queue down (the notice says so): they are queued when it is back.
    modeladmin.message_user(request, f"{count} image(s) will be embedded again.", messages.SUCCESS)


def category_path(category: Category | None) -> str:
    """A category as the admin names it: by its path, since names repeat under other parents ("Accessories"). The
    paths are kept per catalog version (one look-up a row, in the process's memory)."""
    return CategoryPaths()[category.pk] if category is not None else "—"


class CategoryPathFilter(admin.RelatedOnlyFieldListFilter):
    """The categories in use, by their paths, in the paths' order."""

    def field_choices(self, field, request, model_admin):
        paths = CategoryPaths()
        return sorted(((pk, paths[pk]) for pk, _ in super().field_choices(field, request, model_admin)),
                      key=lambda choice: choice[1].casefold())


class CategoryPathChoices:
    """A model admin whose category fields offer each category by its path: in the autocomplete's answers too
    (config/admin_site.py reads ``autocomplete_label``), and in the choice a form shows as made."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if field is not None and db_field.related_model is Category:
            field.label_from_instance = category_path
        return field


class ShownValuesForm(forms.ModelForm):
    """Renders what the admin saw beside each field, so that ``changed_data`` names only the fields they edited: a
    value another admin saved while the page was open is not written back."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.show_hidden_initial = True


@admin.register(Category)
class CategoryAdmin(CategoryPathChoices, RefusedSavesShown):
    form = ShownValuesForm
    list_display = ["name", "parent_path", "slug", "product_count"]
    ordering = ["name", "pk"]  # the product-count annotation drops Meta.ordering; autocomplete pages need one
    list_filter = [("parent", CategoryPathFilter)]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    autocomplete_fields = ["parent"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("parent").annotate(num_products=Count("products"))

    @admin.display(description="Products", ordering="num_products")
    def product_count(self, obj):
        return obj.num_products

    @admin.display(description="Parent", ordering="parent__name")
    def parent_path(self, obj):
        return category_path(obj.parent)

    def autocomplete_label(self, obj):
        return category_path(obj)

    def get_search_results(self, request, queryset, search_term):
        """Names that are the term, then names that begin with it, then the rest: sorted by name alone, "Furniture"
        came after "Chairs & Stools" (whose slug holds it), and Enter picked the wrong category. The list's own order,
        where it shows these results, is applied after this."""
        queryset, duplicates = super().get_search_results(request, queryset, search_term)
        if term := search_term.strip():
            queryset = queryset.alias(match=Case(When(name__iexact=term, then=0), When(name__istartswith=term, then=1),
                                                 default=2)).order_by("match", "name", "pk")
        return queryset, duplicates

    def save_model(self, request, obj, form, change):
        category_save(category=obj, changed=form.changed_data if change else None)

    def get_deleted_objects(self, objs, request):
        """What keeps a category: its subcategories and its products, not the rows search keeps of each photo, which
        the refusal listed one by one before them, hundreds for a large category."""
        to_delete, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        if not protected:
            return to_delete, model_count, perms_needed, protected
        collector = NestedObjects(using=router.db_for_write(Category))
        collector.collect(list(objs))
        selected = {obj.pk for obj in objs}
        # A subcategory selected too goes with its parent (categories_delete deletes the deepest first).
        keeping = sorted((obj for obj in collector.protected if isinstance(obj, Product)
                          or (isinstance(obj, Category) and obj.pk not in selected)),
                         key=lambda obj: (isinstance(obj, Product), str(obj)))
        if not keeping:
            return to_delete, model_count, perms_needed, []
        protected = [format_html('{}: <a href="{}">{}</a>', capfirst(obj._meta.verbose_name),
                                 reverse(f"admin:catalog_{obj._meta.model_name}_change", args=[obj.pk]), obj)
                     for obj in keeping]
        return [], {}, set(), protected

    def delete_model(self, request, obj):
        categories_delete(categories=[obj])

    def delete_queryset(self, request, queryset):
        categories_delete(categories=queryset)


class ProductForm(ShownValuesForm):
    """A price an import set while the page was open is not written back."""

    class Meta:
        field_classes = {"currency": CurrencyField}  # any case, as reads take it; the model's default kept


@admin.register(Product)
class ProductAdmin(CategoryPathChoices, RefusedSavesShown):
    form = ProductForm
    list_display = ["cover", "sku", "title", "category_shown", "price", "currency", "active", "images_ready",
                    "updated_at"]
    list_display_links = ["cover", "sku", "title"]
    # By currency too: prices in two currencies sorted together say nothing.
    list_filter = ["active", ("category", CategoryPathFilter), "currency", "images__embedding_status"]
    search_fields = ["sku", "title", "description"]
    autocomplete_fields = ["category"]
    readonly_fields = ["created_at", "updated_at"]
    fields = ["sku", "title", "category", "price", "currency", "active", "description", "created_at", "updated_at"]
    inlines = [ProductImageInline]
    actions = ["show_in_shop", "hide_from_shop", "reembed_images"]
    list_per_page = 50

    def get_queryset(self, request):
        ready = Count("images", filter=Q(images__embedding_status=EmbeddingStatus.READY), distinct=True)
        return (
            super().get_queryset(request)
            .select_related("category")
            .prefetch_related("images")
            .annotate(num_images=Count("images", distinct=True), num_ready=ready)
        )

    @admin.display(description="")
    def cover(self, obj):
        images = list(obj.images.all())
        return thumbnail(images[0] if images else None)

    @admin.display(description="Category", ordering="category__name")
    def category_shown(self, obj):
        return category_path(obj.category)

    @admin.display(description="Embedded")
    def images_ready(self, obj):
        return f"{obj.num_ready}/{obj.num_images}"

    def save_model(self, request, obj, form, change):
        if change:
            # Even with nothing changed: product_update locks the product, which its photos' rows (save_formset)
            # must follow, the order a worker storing their vectors takes too.
            product_update(product=obj, **{name: form.cleaned_data[name] for name in form.changed_data})
            return
        product = product_create(**form.cleaned_data)
        # The admin adds the photos to, logs and redirects with ``obj``: make it the stored product.
        obj.pk = product.pk
        obj._state.adding = False
        obj.refresh_from_db()

    def save_formset(self, request, form, formset, change):
        if formset.model is not ProductImage:
            return super().save_formset(request, form, formset, change)
        # Photos are written by catalog.services (thumbnails, vectors' copies, embedding), never by the formset.
        notice = queue_down_notice(request)
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        # A photo deleted meanwhile (by another admin, or moved to another product) is gone already: its row has no pk.
        existing = sorted((image_form for image_form in formset.initial_forms if image_form.instance.pk is not None),
                          key=lambda image_form: image_form.instance.pk)
        deleted = [image_form.instance for image_form in existing
                   if formset.can_delete and formset._should_delete_form(image_form)]
        changed = [image_form for image_form in existing
                   if image_form.instance not in deleted and image_form.has_changed()]
        # Deletions first, so that a picture a deleted photo showed may go to another photo of the same save (the
        # other way round, it was refused as a copy); every photo of the product held before any, in pk order.
        product_photos_hold(product=form.instance)
        if deleted:
            product_images_delete(image_ids=[image.pk for image in deleted], of_product=form.instance)
            formset.deleted_objects = deleted
        for image_form in changed:
            product_image_update(
                image=image_form.instance, prepared=image_form.prepared, position=_changed(image_form, "position"),
                of_product=form.instance, on_not_queued=notice,
            )
            formset.changed_objects.append((image_form.instance, image_form.changed_data))
        added = [
            image_form for image_form in formset.extra_forms
            if image_form.has_changed() and not (formset.can_delete and formset._should_delete_form(image_form))
        ]
        if added:  # announced together: one embedding task for the lot
            formset.new_objects = product_images_add(
                product=form.instance, prepared=[image_form.prepared for image_form in added],
                positions=[image_form.cleaned_data["position"] for image_form in added], on_not_queued=notice,
            )

    def view_on_site(self, obj):
        # A hidden product has no page in the shop: the link led to "No such product".
        return obj.get_absolute_url() if obj.active else None

    def delete_model(self, request, obj):
        products_delete(products=[obj])

    def delete_queryset(self, request, queryset):
        products_delete(products=queryset)

    @admin.action(description="Show the selected products in the shop", permissions=["change"])
    def show_in_shop(self, request, queryset):
        changed = products_set_active(products=queryset, active=True)
        self.message_user(request, f"{changed} product(s) now shown in the shop.", messages.SUCCESS)

    @admin.action(description="Hide the selected products from the shop", permissions=["change"])
    def hide_from_shop(self, request, queryset):
        changed = products_set_active(products=queryset, active=False)
        self.message_user(request, f"{changed} product(s) hidden from the shop; they stay in the catalog.",
                          messages.SUCCESS)

    @admin.action(description="Re-embed the images of the selected products", permissions=["change"])
    def reembed_images(self, request, queryset):
        _reembed(self, request, ProductImage.objects.filter(product__in=queryset).values_list("pk", flat=True))


@admin.register(ProductImage)
class ProductImageAdmin(RefusedSavesShown):
    list_display = ["preview", "product", "position", "embedding", "duplicate", "embedded_at", "short_error"]
    list_filter = ["embedding_status", "embedding_model", ("near_duplicate_of", admin.EmptyFieldListFilter)]
    search_fields = ["product__sku", "product__title", "content_hash"]
    list_select_related = ["product", "near_duplicate_of__product"]
    readonly_fields = ["preview", "width", "height", "content_hash", "embedding_status", "embedding_model",
                       "embedding_error", "embedded_at", "duplicate", "created_at"]
    fields = ["product", "file", "position", *readonly_fields]
    form = ProductImageForm
    autocomplete_fields = ["product"]
    actions = ["reembed"]

    @admin.display(description="Preview")
    def preview(self, obj):
        return thumbnail(obj)

    @admin.display(description="Embedding", ordering="embedding_status")
    def embedding(self, obj):
        return status_badge(obj)

    @admin.display(description="Near-duplicate of")
    def duplicate(self, obj):
        return near_duplicate(obj)

    @admin.display(description="Error")
    def short_error(self, obj):
        return Truncator(obj.embedding_error).chars(ERROR_SHOWN)

    def save_model(self, request, obj, form, change):
        notice = queue_down_notice(request)
        if change:
            image = product_image_update(
                image=obj, prepared=form.prepared, product=_changed(form, "product"),
                position=_changed(form, "position"), on_not_queued=notice,
            )
        else:
            image = product_image_add(
                product=form.cleaned_data["product"], prepared=form.prepared,
                position=form.cleaned_data["position"], on_not_queued=notice,
            )
        # The admin logs and redirects with ``obj``: make it the stored photo.
        obj.pk = image.pk
        obj._state.adding = False
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        product_image_delete(image=obj)

    def delete_queryset(self, request, queryset):
        product_images_delete(image_ids=queryset.values_list("pk", flat=True))

    @admin.action(description="Re-embed the selected images", permissions=["change"])
    def reembed(self, request, queryset):
        _reembed(self, request, queryset.values_list("pk", flat=True))
