from django.urls import path

from apps.characters import api

urlpatterns = [
    path("characters", api.CharacterListCreateView.as_view(), name="characters"),
    path("characters/<int:pk>", api.CharacterDetailView.as_view(), name="character-detail"),
]
