from django.urls import path

from apps.providers import api

urlpatterns = [
    path("models", api.ModelListView.as_view(), name="models"),
]
