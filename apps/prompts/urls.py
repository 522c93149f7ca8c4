from django.urls import path

from apps.prompts import api

urlpatterns = [
    path("prompts", api.PromptListCreateView.as_view(), name="prompts"),
    path("prompts/<int:prompt_id>", api.PromptDetailView.as_view(), name="prompt-detail"),
]
