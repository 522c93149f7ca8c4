"""Roleplay mode (SillyTavern-style chats): personas, chats, messages and one generation turn.

The models live in ``apps.generation.models`` (one Django app, one migration history).
"""
