from django.urls import path

from apps.macros import api

urlpatterns = [path("macros/preview", api.MacroPreviewView.as_view(), name="macro-preview")]
