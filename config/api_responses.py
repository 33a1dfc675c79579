"""Answers any API operation may give beside its own, named in the schema (drf-spectacular lists only those declared):
so that a client knows when to expect each, and its shape, ``{"detail": "message"}``."""

from drf_spectacular.utils import OpenApiResponse

ANYONE = {
    401: OpenApiResponse(description="A token was sent that is not valid (reads need none, but a bad one is refused)"),
    429: OpenApiResponse(description="Too many requests from this client (anonymous requests are limited); see "
                                     "Retry-After"),
}
A_PAGE = {
    400: OpenApiResponse(description='A filter, page or page size that cannot be read: `{"field": ["message"]}`'),
    404: OpenApiResponse(description='A page past the last: `{"detail": "Invalid page."}`'),
}
A_BODY = {
    411: OpenApiResponse(description="A body sent in chunks without a Content-Length"),
    413: OpenApiResponse(description="The request body is larger than the upload limit"),
    415: OpenApiResponse(description="A body in a media type the operation does not take"),
}
