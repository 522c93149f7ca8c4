from django.urls import path

from apps.worldviews import api

urlpatterns = [
    path("worldviews", api.WorldviewListCreateView.as_view(), name="worldviews"),
    path("worldviews/<int:pk>", api.WorldviewDetailView.as_view(), name="worldview-detail"),
]
