"""`/playground/`: a static page (HTML, CSS, JavaScript modules from `static/playground/`: no build
step, no CDN) that signs in, previews, streams, stops and shows what it cost — a client of the public
API like any other, so it may be served from another origin too (`?api=` names the API's origin)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.macros.engine.registry import REGISTRY

# The page talks to the API with fetch (any origin the operator allows with CORS: `?api=`); everything
# else comes from this origin. No inline script: the macro names travel as a JSON data block.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self' http: https:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)


@require_GET
def playground(request: HttpRequest) -> HttpResponse:
    """The page; it lists the built-in macro names so that `{{参数}}` detection leaves them out."""
    response = render(request, "playground/index.html", {"macro_names": sorted(REGISTRY)})
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Cache-Control"] = "no-cache"
    return response
