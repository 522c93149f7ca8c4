"""Security tests use writing mode's fixtures (models on the fake upstream, a prompt, a token)."""

from tests.generation.conftest import (  # noqa: F401 (fixtures)
    _module_fake_upstream,
    fake_upstream,
    http,
    make_model,
    token,
    writing_prompt,
)
