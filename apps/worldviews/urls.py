from django.urls import path

from apps.worldviews import api

urlpatterns = [
    path("worldviews", api.WorldviewListCreateView.as_view(), name="worldviews"),
    path("worldviews/<int:pk>", api.WorldviewDetailView.as_view(), name="worldview-detail"),
    path("lorebooks", api.LorebookListCreateView.as_view(), name="lorebooks"),
    path("lorebooks/import", api.LorebookImportView.as_view(), name="lorebook-import"),
    path("lorebooks/<int:pk>", api.LorebookDetailView.as_view(), name="lorebook-detail"),
    path("lorebooks/<int:pk>/export", api.LorebookExportView.as_view(), name="lorebook-export"),
    path("lorebooks/<int:pk>/entries", api.LorebookEntryListCreateView.as_view(), name="lorebook-entries"),
    path("lorebooks/<int:pk>/entries/<int:uid>", api.LorebookEntryDetailView.as_view(), name="lorebook-entry"),
]
