"""Instruct templates for Text Completions (``openai_text`` connections) — pure, no Django.

A conversation (:class:`~apps.providers.types.ChatMessage` list) is rendered into one prompt string by a
Jinja2 template, plus the stop strings that end the assistant's turn (SPEC §7; SillyTavern's instruct
mode, reference §6). Built-ins (:data:`INSTRUCT_TEMPLATES`; exact strings in
``docs/prompt-postprocessing.md``), written S/U/A for system/user/assistant text, ``…`` for the
generation prompt:

- ``chatml``: ``<|im_start|>{role}\\n{text}<|im_end|>\\n`` per message … ``<|im_start|>assistant\\n``;
  stop ``<|im_end|>``, ``<|im_start|>``.
- ``llama3``: ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{text}<|eot_id|>`` …
  ``<|start_header_id|>assistant<|end_header_id|>\\n\\n``; stop ``<|eot_id|>``, ``<|start_header_id|>``.
- ``mistral`` (SillyTavern's "Mistral V7"): ``[SYSTEM_PROMPT] S[/SYSTEM_PROMPT]``, ``[INST] U[/INST]``,
  `` A</s>``; the prompt ends right after ``[/INST]`` (no trailing space); stop ``</s>``, ``[INST]``.
- ``alpaca``: system text before the first user/assistant message ``S\\n\\n``, later system
  ``### Input:\\nS\\n\\n``, ``### Instruction:\\nU\\n\\n``, ``### Response:\\nA\\n\\n`` …
  ``### Response:\\n``; stop ``\\n### Instruction:``, ``\\n### Input:``, ``\\n### Response:``.
- ``gemma``: ``<start_of_turn>user\\n…<end_of_turn>\\n``, the assistant's role is ``model``; a first
  system message followed by a user message is folded into that turn (``S\\n\\nU``), other system
  messages are user turns … ``<start_of_turn>model\\n``; stop ``<end_of_turn>``, ``<start_of_turn>``.
- ``transcript`` (for base models such as the llama.cpp test model): ``S\\n\\n``, ``User: U\\n``,
  ``Assistant: A\\n`` … ``Assistant:``; stop ``\\nUser:``.

No BOS token is emitted: backends (llama.cpp, vLLM, …) add it when they tokenize the prompt.

Template variables
    ``messages``: list of dicts ``{"role", "content", "name", "text"}``; ``text`` is the content with the
    speaker name folded in as ``"{name}: {content}"`` (not for ``system`` messages, whose names are
    labels such as ``example_user``; not when the content already starts with that prefix).
    ``add_generation_prompt``: true, so the template ends with the assistant's turn header.
    ``bos_token``: ``""``; ``raise_exception(message)``: fails rendering with that message (both for
    compatibility with Hugging Face chat templates).

Prefill
    When the last message is ``assistant`` its content is a prefill: the prompt ends with that content,
    unterminated, so the model continues it (an empty, unnamed trailing assistant message is dropped:
    the prompt then ends with the generation prompt as usual). This works for every template, custom
    ones included: the template is rendered with ``add_generation_prompt`` false and a unique marker
    appended to the last message's ``content``/``text``; the output is cut at the marker. A template
    that does not render the final content verbatim cannot prefill and fails with
    :class:`InstructTemplateError`.

Custom templates (``template="custom"``, source in ``custom_template``)
    Compiled in :class:`jinja2.sandbox.ImmutableSandboxedEnvironment` (autoescape off,
    ``StrictUndefined``, trailing newline kept). Stop strings are declared in the source by one Jinja
    comment holding a JSON array of strings — it renders nothing::

        {# stop: ["</s>", "\\nUser:"] #}

    (at most 16 strings of 1–200 characters; no declaration = no stop strings).

    Rejected when compiling: syntax errors (with the line), ``extends``/``include``/``import``,
    attributes or keys starting with ``_``, the filters ``center``/``indent``/``format``/``wordwrap``,
    sources over :data:`MAX_TEMPLATE_CHARS`. Refused when rendering (defence in depth — templates come
    from operators, not users): ``range`` beyond 100,000 items per render in total; ``*`` on
    strings/lists, ``|replace``/``.replace`` and ``|join``/``.join`` building more than
    :data:`MAX_RENDERED_CHARS` characters (or items); ``str % …`` formatting; the string methods
    ``ljust``/``rjust``/``center``/``zfill``/``expandtabs``/``format``; ``**`` exponents above 100;
    ``lipsum``; a prompt longer than ``max_chars`` (default :data:`MAX_RENDERED_CHARS`). Recursion and
    any other runtime failure become :class:`InstructTemplateError`. :func:`validate_custom_template`
    also trial-renders a sample conversation (plain and prefill) so that operators see errors when
    saving.

    With a built-in ``template`` name, ``custom_template`` is ignored. Compiled templates are cached
    (built-ins once, custom ones by source, 128 entries).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.filters import do_join, do_replace
from jinja2.sandbox import ImmutableSandboxedEnvironment

from apps.providers.types import ChatMessage

INSTRUCT_TEMPLATES: tuple[str, ...] = ("chatml", "llama3", "mistral", "alpaca", "gemma", "transcript")
CUSTOM_TEMPLATE = "custom"

MAX_RENDERED_CHARS = 4_000_000
"""Cap on the rendered prompt and on any string/list a template builds (≈ 1.2M tokens)."""
MAX_TEMPLATE_CHARS = 100_000
MAX_RANGE_ITEMS = 100_000
MAX_EXPONENT = 100
MAX_STOP_STRINGS = 16
MAX_STOP_STRING_CHARS = 200


class InstructTemplateError(ValueError):
    """An unknown template name, or a custom template that is invalid or failed to render."""


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    prompt: str
    stop: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Builtin:
    source: str
    stop: tuple[str, ...]
    control: tuple[str, ...] = ()  # markers of the format that message text must not contain (see _neutralize)


_BUILTINS: dict[str, _Builtin] = {
    "chatml": _Builtin(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.text }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        ("<|im_end|>", "<|im_start|>"),
        ("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
    ),
    "llama3": _Builtin(
        "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.text }}<|eot_id|>"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
        ("<|eot_id|>", "<|start_header_id|>"),
        ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|end_of_text|>"),
    ),
    "mistral": _Builtin(
        "{% for m in messages %}"
        "{% if m.role == 'system' %}[SYSTEM_PROMPT] {{ m.text }}[/SYSTEM_PROMPT]"
        "{% elif m.role == 'user' %}[INST] {{ m.text }}[/INST]"
        "{% else %} {{ m.text }}</s>{% endif %}"
        "{% endfor %}",
        ("</s>", "[INST]"),
        ("[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[INST]", "[/INST]", "<s>", "</s>"),
    ),
    "alpaca": _Builtin(
        "{% set ns = namespace(started=false) %}"
        "{% for m in messages %}"
        "{% if m.role == 'system' and not ns.started %}{{ m.text }}\n\n"
        "{% else %}{% set ns.started = true %}"
        "{% if m.role == 'system' %}### Input:\n{% elif m.role == 'user' %}### Instruction:\n"
        "{% else %}### Response:\n{% endif %}{{ m.text }}\n\n"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}### Response:\n{% endif %}",
        ("\n### Instruction:", "\n### Input:", "\n### Response:"),
        ("\n### Instruction:", "\n### Input:", "\n### Response:"),
    ),
    "gemma": _Builtin(
        "{% set ns = namespace(prefix='') %}"
        "{% for m in messages %}"
        "{% if loop.first and m.role == 'system' and messages|length > 1 and messages[1].role == 'user' %}"
        "{% set ns.prefix = m.text ~ '\n\n' %}"
        "{% else %}"
        "<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n{{ ns.prefix }}{{ m.text }}"
        "<end_of_turn>\n{% set ns.prefix = '' %}"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
        ("<end_of_turn>", "<start_of_turn>"),
        ("<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>"),
    ),
    "transcript": _Builtin(
        "{% for m in messages %}"
        "{% if m.role == 'system' %}{{ m.text }}\n\n"
        "{% elif m.role == 'user' %}User: {{ m.text }}\n"
        "{% else %}Assistant: {{ m.text }}\n{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}Assistant:{% endif %}",
        ("\nUser:",),
        ("\nUser:", "\nAssistant:"),
    ),
}
assert tuple(_BUILTINS) == INSTRUCT_TEMPLATES

# ---------------------------------------------------------------------------------------------------
# The sandbox


_range_budget: ContextVar[list[int] | None] = ContextVar("instruct_range_budget", default=None)


def _budgeted_range(*args: int) -> range:
    items = range(*args)
    budget = _range_budget.get()
    if budget is not None:
        budget[0] -= len(items)
        if budget[0] < 0:
            raise SecurityError(f"range() may yield at most {MAX_RANGE_ITEMS} items per render")
    return items


def _check_size(size: int, what: str) -> None:
    if size > MAX_RENDERED_CHARS:
        raise SecurityError(f"{what} would build {size} characters/items (limit {MAX_RENDERED_CHARS})")


def _replaced_size(text: str, old: str, new: str, count: int | None) -> int:
    occurrences = len(text) + 1 if old == "" else text.count(old)
    if count is not None and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * (len(new) - len(old))


def _guarded_replace(eval_ctx: Any, value: Any, old: Any, new: Any, count: int | None = None) -> Any:
    _check_size(_replaced_size(str(value), str(old), str(new), count), "replace")
    return do_replace(eval_ctx, value, old, new, count)


def _joined_size(separator: str, items: Sequence[Any]) -> int:
    return sum(len(str(item)) for item in items) + len(separator) * max(len(items) - 1, 0)


def _guarded_join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    items = list(value)
    if attribute is None:
        _check_size(_joined_size(str(d), items), "join")
    else:  # the picked attributes already exist; the separator is what multiplies
        _check_size(len(str(d)) * max(len(items) - 1, 0), "join")
    return do_join(eval_ctx, items, d, attribute)


_guarded_replace.jinja_pass_arg = do_replace.jinja_pass_arg  # type: ignore[attr-defined]
_guarded_join.jinja_pass_arg = do_join.jinja_pass_arg  # type: ignore[attr-defined]

_REMOVED_FILTERS = ("center", "indent", "format", "wordwrap")
_UNSAFE_STR_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "format", "format_map"})


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _UNSAFE_STR_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(times, int):
                    _check_size(len(sequence) * times, "*")
        elif operator == "**":
            if isinstance(right, int) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponents above {MAX_EXPONENT} are not allowed")
        elif operator == "%" and isinstance(left, str):
            raise SecurityError("string % formatting is not allowed in instruct templates")
        return super().call_binop(context, operator, left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(obj, "__name__", "")
            if name == "replace" and len(args) >= 2:
                count = args[2] if len(args) > 2 else kwargs.get("count")
                _check_size(_replaced_size(owner, str(args[0]), str(args[1]), count), "replace")
            elif name == "join" and args:
                items = list(args[0])
                _check_size(_joined_size(owner, items), "join")
                args = (items, *args[1:])
        return super().call(context, obj, *args, **kwargs)


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


@cache
def _environment() -> _Sandbox:
    env = _Sandbox(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)
    for name in _REMOVED_FILTERS:
        env.filters.pop(name, None)
    env.filters["replace"] = _guarded_replace
    env.filters["join"] = _guarded_join
    env.globals.pop("lipsum", None)
    env.globals["range"] = _budgeted_range
    env.globals["raise_exception"] = _raise_exception
    env.globals["bos_token"] = ""
    return env


# ---------------------------------------------------------------------------------------------------
# Compilation (cached)


@dataclass(frozen=True, slots=True)
class _Compiled:
    template: Template
    stop: tuple[str, ...]
    control: tuple[str, ...] = ()


@cache
def _compiled_builtin(name: str) -> _Compiled:
    builtin = _BUILTINS[name]
    return _Compiled(_environment().from_string(builtin.source), builtin.stop, builtin.control or builtin.stop)


_STOP_DECLARATION = re.compile(r"\{#-?\s*stop\s*:(?P<body>.*?)-?#\}", re.DOTALL)


def _parse_stop(source: str) -> tuple[str, ...]:
    declarations = list(_STOP_DECLARATION.finditer(source))
    if not declarations:
        return ()
    if len(declarations) > 1:
        raise InstructTemplateError("declare the stop strings once: more than one {# stop: … #} comment")
    body = declarations[0].group("body").strip()
    try:
        stop = json.loads(body)
    except json.JSONDecodeError as exc:
        raise InstructTemplateError(
            f'the stop declaration must be a JSON array of strings, e.g. {{# stop: ["</s>"] #}}: {exc}'
        ) from exc
    if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
        raise InstructTemplateError('the stop declaration must be a JSON array of strings, e.g. ["</s>"]')
    if len(stop) > MAX_STOP_STRINGS:
        raise InstructTemplateError(f"at most {MAX_STOP_STRINGS} stop strings, got {len(stop)}")
    for item in stop:
        if not 1 <= len(item) <= MAX_STOP_STRING_CHARS:
            raise InstructTemplateError(f"stop strings must have 1–{MAX_STOP_STRING_CHARS} characters: {item!r}")
    return tuple(dict.fromkeys(stop))


def _forbidden_construct(tree: nodes.Template) -> str | None:
    for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        keyword = {nodes.Extends: "extends", nodes.Include: "include"}.get(type(node), "import")
        return f"line {node.lineno}: '{keyword}' is not allowed (a template is self-contained)"
    for attr_node in tree.find_all(nodes.Getattr):
        if attr_node.attr.startswith("_"):
            return f"line {attr_node.lineno}: attribute {attr_node.attr!r} is not allowed (names starting with '_')"
    for item_node in tree.find_all(nodes.Getitem):
        key = item_node.arg
        if isinstance(key, nodes.Const) and isinstance(key.value, str) and key.value.startswith("_"):
            return f"line {item_node.lineno}: key {key.value!r} is not allowed (names starting with '_')"
    return None


@lru_cache(maxsize=128)
def _compile_custom(source: str) -> _Compiled:
    if not source.strip():
        raise InstructTemplateError("the custom instruct template is empty")
    if len(source) > MAX_TEMPLATE_CHARS:
        raise InstructTemplateError(f"the custom instruct template exceeds {MAX_TEMPLATE_CHARS} characters")
    env = _environment()
    try:
        tree = env.parse(source)
        problem = _forbidden_construct(tree)
        if problem is not None:
            raise InstructTemplateError(f"forbidden construct on {problem}")
        template = env.from_string(tree)
    except TemplateSyntaxError as exc:
        raise InstructTemplateError(f"syntax error on line {exc.lineno}: {exc.message}") from exc
    stop = _parse_stop(source)
    return _Compiled(template, stop, stop)  # a custom template's turn markers are its stop strings


def _resolve(template: str, custom_template: str | None) -> _Compiled:
    if template in _BUILTINS:
        return _compiled_builtin(template)
    if template == CUSTOM_TEMPLATE:
        if custom_template is None:
            raise InstructTemplateError("instruct template 'custom' needs the template source")
        return _compile_custom(custom_template)
    raise InstructTemplateError(
        f"unknown instruct template {template!r}; expected one of {', '.join(INSTRUCT_TEMPLATES)}"
        f" or {CUSTOM_TEMPLATE!r}"
    )


# ---------------------------------------------------------------------------------------------------
# Rendering


def _text(message: ChatMessage) -> str:
    if message.role == "system" or not message.name:
        return message.content
    prefix = f"{message.name}: "
    return message.content if message.content.startswith(prefix) else prefix + message.content


def _neutralize(text: str, control: Sequence[str]) -> str:
    """Message text cannot forge a turn of the template (a user writing ``<|im_start|>system …``): token
    markers are removed — repeatedly, so that removing one cannot join the halves of another — and
    line-start headers (``\n### Instruction:``, ``\nUser:``) get a space before them, so they no longer
    start a line. Applied to every message's content and name (user text, history, card fields)."""
    if not text:
        return text
    tokens = [m for m in control if not m.startswith("\n")]
    headers = [m[1:] for m in control if m.startswith("\n") and len(m) > 1]
    for _ in range(len(text)):  # each pass removes at least one character, or stops
        stripped = text
        for token in tokens:
            stripped = stripped.replace(token, "")
        if stripped == text:
            break
        text = stripped
    for header in headers:
        text = re.sub(r"(^|\n)(?=" + re.escape(header) + ")", r"\1 ", text)
    return text


def _safe(message: ChatMessage, control: Sequence[str]) -> ChatMessage:
    content = _neutralize(message.content, control)
    name = _neutralize(message.name, control) if message.name else message.name
    if content == message.content and name == message.name:
        return message
    return ChatMessage(message.role, content, name)


def _as_dict(message: ChatMessage, suffix: str = "") -> dict[str, Any]:
    return {
        "role": message.role,
        "content": message.content + suffix,
        "name": message.name,
        "text": _text(message) + suffix,
    }


def _render(compiled: _Compiled, context: dict[str, Any], max_chars: int) -> str:
    parts: list[str] = []
    size = 0
    token = _range_budget.set([MAX_RANGE_ITEMS])
    try:
        for part in compiled.template.generate(context):
            size += len(part)
            if size > max_chars:
                raise InstructTemplateError(f"the rendered prompt exceeds {max_chars} characters")
            parts.append(part)
    except InstructTemplateError:
        raise
    except RecursionError as exc:
        raise InstructTemplateError("instruct template failed to render: recursion too deep") from exc
    except Exception as exc:
        # the template is operator-supplied code: any failure of it is a template error
        raise InstructTemplateError(f"instruct template failed to render: {exc}") from exc
    finally:
        _range_budget.reset(token)
    return "".join(parts)


def render_prompt(
    messages: Sequence[ChatMessage],
    template: str,
    custom_template: str | None = None,
    *,
    max_chars: int = MAX_RENDERED_CHARS,
) -> RenderedPrompt:
    """Render ``messages`` with the named instruct template (or ``"custom"`` + ``custom_template``).

    The prompt ends with the assistant's turn header, or with the unterminated content of a trailing
    assistant message (prefill). Raises :class:`InstructTemplateError` (a ``ValueError``).
    """
    compiled = _resolve(template, custom_template)
    if compiled.control:
        messages = [_safe(m, compiled.control) for m in messages]
    if messages and messages[-1].role == "assistant" and not messages[-1].content and not messages[-1].name:
        messages = messages[:-1]  # an empty trailing assistant message prefills nothing
    prefill = bool(messages) and messages[-1].role == "assistant"
    if not prefill:
        context = {"messages": [_as_dict(m) for m in messages], "add_generation_prompt": True}
        return RenderedPrompt(_render(compiled, context, max_chars), compiled.stop)

    marker = f"\ue000prefill-{uuid.uuid4().hex}\ue000"
    dicts = [_as_dict(m) for m in messages[:-1]]
    dicts.append(_as_dict(messages[-1], marker))
    rendered = _render(compiled, {"messages": dicts, "add_generation_prompt": False}, max_chars + len(marker))
    cut = rendered.rfind(marker)
    if cut < 0:
        raise InstructTemplateError(
            "the instruct template must render the last assistant message's content verbatim"
            " (needed to continue a trailing assistant message: prefill)"
        )
    return RenderedPrompt(rendered[:cut], compiled.stop)


_SAMPLE = (
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "Hello", name="Ann"),
    ChatMessage("assistant", "Hi! How can I help?"),
    ChatMessage("user", "Tell me a story."),
)


def validate_custom_template(source: str) -> None:
    """Check a custom template: size, syntax, forbidden constructs, stop declaration, and trial renders
    of a sample conversation (normal and prefill). Raises :class:`InstructTemplateError`."""
    _compile_custom(source)
    if not render_prompt(_SAMPLE, CUSTOM_TEMPLATE, source).prompt.strip():
        raise InstructTemplateError("the custom instruct template renders an empty prompt")
    render_prompt((*_SAMPLE, ChatMessage("assistant", "Once upon a time")), CUSTOM_TEMPLATE, source)
