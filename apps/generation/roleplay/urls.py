from django.urls import path

from apps.generation.roleplay import api

urlpatterns = [
    path("lorebooks/activate", api.LorebookActivateView.as_view(), name="lorebook-activate"),
    path("personas", api.PersonaListCreateView.as_view(), name="personas"),
    path("personas/<int:pk>", api.PersonaDetailView.as_view(), name="persona-detail"),
    path("chats", api.ChatListCreateView.as_view(), name="chats"),
    path("chats/<int:pk>", api.ChatDetailView.as_view(), name="chat-detail"),
    path("chats/<int:pk>/messages", api.ChatMessageListView.as_view(), name="chat-messages"),
    path("chats/<int:pk>/messages/<int:message_id>", api.ChatMessageDetailView.as_view(), name="chat-message"),
    path("generation/roleplay", api.RoleplayGenerateView.as_view(), name="generation-roleplay"),
    path("generation/roleplay/stream", api.RoleplayStreamView.as_view(), name="generation-roleplay-stream"),
    path("generation/roleplay/preview", api.RoleplayPreviewView.as_view(), name="generation-roleplay-preview"),
]
