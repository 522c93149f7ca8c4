from django.urls import path

from apps.novels import api

urlpatterns = [
    path("novels", api.NovelListCreateView.as_view(), name="novels"),
    path("novels/<int:novel_id>", api.NovelDetailView.as_view(), name="novel-detail"),
]
