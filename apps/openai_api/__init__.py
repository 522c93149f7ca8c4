"""The OpenAI-compatible API (`/v1/chat/completions`, `/v1/completions`, `/v1/models`): SillyTavern,
Tavo and the `openai` SDK as clients, billed in characters like writing mode (docs/openai-compatible.md)."""
