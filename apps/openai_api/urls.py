from django.urls import path, re_path

from apps.openai_api import api, errors

urlpatterns = [
    path("chat/completions", api.ChatCompletionsView.as_view(), name="v1-chat-completions"),
    path("completions", api.CompletionsView.as_view(), name="v1-completions"),
    path("models", api.ModelsView.as_view(), name="v1-models"),
    path("models/<path:model_id>", api.ModelDetailView.as_view(), name="v1-model"),
    # anything else under /v1/ is an OpenAI-shaped 404
    re_path(r"^", errors.not_found),
]
