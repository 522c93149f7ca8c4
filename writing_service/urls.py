from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.core.api import exceptions, health
from apps.core.api.throttling import rate_limited
from apps.dashboard.views import usage_dashboard_view
from writing_service.metrics import metrics_view

# Admin sign-in attempts per client address (RATE_LIMIT_ADMIN_LOGIN): password guessing gets 429s.
admin.site.login = rate_limited("admin_login")(admin.site.login)  # type: ignore[method-assign]
admin.site.index_template = "admin/dashboard/index.html"  # the index links the usage dashboard

api_v1 = [
    path("", include("apps.accounts.urls")),
    path("", include("apps.novels.urls")),
    path("", include("apps.characters.urls")),
    path("", include("apps.worldviews.urls")),
    path("", include("apps.prompts.urls")),
    path("", include("apps.generation.urls")),
    path("", include("apps.macros.urls")),
    path("", include("apps.providers.urls")),
    path("", include("apps.billing.urls")),
    path("", include("apps.generation.roleplay.urls")),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),  # Prometheus; METRICS_TOKEN guards it
    # before admin.site.urls, whose `admin/<app_label>/` would take it; staff only (admin_view)
    path("admin/usage/", admin.site.admin_view(usage_dashboard_view), name="usage-dashboard"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/v1/", include(api_v1)),
    path("v1/", include("apps.openai_api.urls")),
    path("playground/", include("apps.playground.urls")),
    *([re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True})] if settings.SERVE_STATIC else []),
    # Anything else under /api/ is a JSON 404 in the envelope, whatever DEBUG says.
    re_path(r"^api/", exceptions.handler404),
]

handler400 = "apps.core.api.exceptions.handler400"
handler403 = "apps.core.api.exceptions.handler403"
handler404 = "apps.core.api.exceptions.handler404"
handler500 = "apps.core.api.exceptions.handler500"
