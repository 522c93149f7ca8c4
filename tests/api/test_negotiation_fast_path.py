"""The generation views' content negotiation answers its common case without DRF's parsing; the
answer must be the one DRF gives."""

from __future__ import annotations

import pytest
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from apps.generation.api import WritingGenerateView, WritingStreamView


@pytest.mark.parametrize("view_class", [WritingGenerateView, WritingStreamView])
@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_the_fast_answer_is_drfs(view_class, accept):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().post("/x", {}, format="json", **headers))
    view = view_class()
    renderer, media_type = view.perform_content_negotiation(request)
    drf_renderer, drf_media_type = DefaultContentNegotiation().select_renderer(request, view.get_renderers())
    assert (type(renderer), media_type) == (type(drf_renderer), drf_media_type)


def test_other_requests_still_go_through_drf():
    request = Request(APIRequestFactory().post("/x?a=1", {}, format="json", HTTP_ACCEPT="text/event-stream"))
    view = WritingStreamView()
    view.format_kwarg = None
    _renderer, media_type = view.perform_content_negotiation(request)
    assert media_type == "text/event-stream"


def test_an_empty_accept_is_still_refused_as_drf_refuses_it():
    from rest_framework.exceptions import NotAcceptable

    view = WritingGenerateView()
    view.format_kwarg = None
    with pytest.raises(NotAcceptable):
        view.perform_content_negotiation(Request(APIRequestFactory().post("/x", {}, format="json", HTTP_ACCEPT="")))
