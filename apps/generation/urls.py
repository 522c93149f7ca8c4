from django.urls import path

from apps.generation import api

urlpatterns = [
    path("generation/writing", api.WritingGenerateView.as_view(), name="generation-writing"),
    path("generation/writing/preview", api.WritingPreviewView.as_view(), name="generation-writing-preview"),
    path("generation/writing/stream", api.WritingStreamView.as_view(), name="generation-writing-stream"),
    path("generations", api.GenerationListView.as_view(), name="generations"),
    path("generations/<str:generation_id>", api.GenerationDetailView.as_view(), name="generation-detail"),
]
