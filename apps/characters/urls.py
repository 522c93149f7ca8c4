from django.urls import path

from apps.characters import api

urlpatterns = [
    path("characters", api.CharacterListCreateView.as_view(), name="characters"),
    path("characters/import", api.CharacterImportView.as_view(), name="character-import"),
    path("characters/<int:pk>", api.CharacterDetailView.as_view(), name="character-detail"),
    path("characters/<int:pk>/export", api.CharacterExportView.as_view(), name="character-export"),
    path("characters/<int:pk>/avatar", api.CharacterAvatarView.as_view(), name="character-avatar"),
]
