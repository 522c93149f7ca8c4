"""Table tests for the instruct templates (Text Completions prompt rendering)."""

from __future__ import annotations

import pytest

from apps.providers import instruct
from apps.providers.instruct import (
    CUSTOM_TEMPLATE,
    INSTRUCT_TEMPLATES,
    InstructTemplateError,
    RenderedPrompt,
    render_prompt,
    validate_custom_template,
)
from apps.providers.types import ChatMessage

CONVERSATION = [
    ChatMessage("system", "You are a helpful writer."),
    ChatMessage("user", "Hi"),
    ChatMessage("assistant", "Hello!"),
    ChatMessage("user", "Write a haiku."),
]
PREFILL = [*CONVERSATION, ChatMessage("assistant", "An old pond")]

STOPS = {
    "chatml": ("<|im_end|>", "<|im_start|>"),
    "llama3": ("<|eot_id|>", "<|start_header_id|>"),
    "mistral": ("</s>", "[INST]"),
    "alpaca": ("\n### Instruction:", "\n### Input:", "\n### Response:"),
    "gemma": ("<end_of_turn>", "<start_of_turn>"),
    "transcript": ("\nUser:",),
}

# The 4-message conversation (system, user, assistant, user) under every built-in.
CONVERSATION_PROMPTS = {
    "chatml": (
        "<|im_start|>system\nYou are a helpful writer.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nWrite a haiku.<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "llama3": (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful writer.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWrite a haiku.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "mistral": (
        "[SYSTEM_PROMPT] You are a helpful writer.[/SYSTEM_PROMPT]"
        "[INST] Hi[/INST] Hello!</s>[INST] Write a haiku.[/INST]"
    ),
    "alpaca": (
        "You are a helpful writer.\n\n"
        "### Instruction:\nHi\n\n"
        "### Response:\nHello!\n\n"
        "### Instruction:\nWrite a haiku.\n\n"
        "### Response:\n"
    ),
    "gemma": (
        "<start_of_turn>user\nYou are a helpful writer.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nWrite a haiku.<end_of_turn>\n"
        "<start_of_turn>model\n"
    ),
    "transcript": "You are a helpful writer.\n\nUser: Hi\nAssistant: Hello!\nUser: Write a haiku.\nAssistant:",
}

# The same conversation plus a trailing assistant message "An old pond": only the end differs.
PREFILL_ENDINGS = {
    "chatml": "<|im_start|>user\nWrite a haiku.<|im_end|>\n<|im_start|>assistant\nAn old pond",
    "llama3": (
        "<|start_header_id|>user<|end_header_id|>\n\nWrite a haiku.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nAn old pond"
    ),
    "mistral": "[INST] Write a haiku.[/INST] An old pond",
    "alpaca": "### Instruction:\nWrite a haiku.\n\n### Response:\nAn old pond",
    "gemma": "<start_of_turn>user\nWrite a haiku.<end_of_turn>\n<start_of_turn>model\nAn old pond",
    "transcript": "User: Write a haiku.\nAssistant: An old pond",
}


def test_builtin_names() -> None:
    assert INSTRUCT_TEMPLATES == ("chatml", "llama3", "mistral", "alpaca", "gemma", "transcript")
    assert set(CONVERSATION_PROMPTS) == set(INSTRUCT_TEMPLATES) == set(PREFILL_ENDINGS) == set(STOPS)


@pytest.mark.parametrize("template", INSTRUCT_TEMPLATES)
def test_builtin_renders_conversation(template: str) -> None:
    assert render_prompt(CONVERSATION, template) == RenderedPrompt(CONVERSATION_PROMPTS[template], STOPS[template])


@pytest.mark.parametrize("template", INSTRUCT_TEMPLATES)
def test_builtin_prefill_ends_unterminated(template: str) -> None:
    # given the conversation's prompt without its generation prompt
    full = CONVERSATION_PROMPTS[template]
    common = full[: full.rindex(PREFILL_ENDINGS[template].split("Write a haiku.")[0])]
    # when
    rendered = render_prompt(PREFILL, template)
    # then
    assert rendered == RenderedPrompt(common + PREFILL_ENDINGS[template], STOPS[template])
    assert rendered.prompt.endswith("An old pond")


# Edge cases, exact strings: (id, template, messages, expected prompt)
S, U, A = "system", "user", "assistant"
EDGE_CASES = [
    ("chatml-empty", "chatml", [], "<|im_start|>assistant\n"),
    ("llama3-empty", "llama3", [], "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    ("mistral-empty", "mistral", [], ""),
    ("alpaca-empty", "alpaca", [], "### Response:\n"),
    ("gemma-empty", "gemma", [], "<start_of_turn>model\n"),
    ("transcript-empty", "transcript", [], "Assistant:"),
    ("transcript-only-system", "transcript", [ChatMessage(S, "Be brief.")], "Be brief.\n\nAssistant:"),
    (
        "gemma-only-system-is-a-user-turn",
        "gemma",
        [ChatMessage(S, "Be brief.")],
        "<start_of_turn>user\nBe brief.<end_of_turn>\n<start_of_turn>model\n",
    ),
    (
        "gemma-system-then-assistant-not-folded",
        "gemma",
        [ChatMessage(S, "S"), ChatMessage(A, "A"), ChatMessage(U, "U")],
        "<start_of_turn>user\nS<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n"
        "<start_of_turn>user\nU<end_of_turn>\n<start_of_turn>model\n",
    ),
    (
        "gemma-system-in-middle-is-a-user-turn",
        "gemma",
        [ChatMessage(U, "U"), ChatMessage(S, "note"), ChatMessage(U, "U2")],
        "<start_of_turn>user\nU<end_of_turn>\n<start_of_turn>user\nnote<end_of_turn>\n"
        "<start_of_turn>user\nU2<end_of_turn>\n<start_of_turn>model\n",
    ),
    (
        "alpaca-later-system-is-input",
        "alpaca",
        [ChatMessage(S, "S1"), ChatMessage(S, "S2"), ChatMessage(U, "U"), ChatMessage(S, "note")],
        "S1\n\nS2\n\n### Instruction:\nU\n\n### Input:\nnote\n\n### Response:\n",
    ),
    (
        "chatml-system-in-middle",
        "chatml",
        [ChatMessage(U, "U"), ChatMessage(S, "note")],
        "<|im_start|>user\nU<|im_end|>\n<|im_start|>system\nnote<|im_end|>\n<|im_start|>assistant\n",
    ),
    (
        "mistral-system-in-middle",
        "mistral",
        [ChatMessage(U, "U"), ChatMessage(A, "A"), ChatMessage(S, "note"), ChatMessage(U, "U2")],
        "[INST] U[/INST] A</s>[SYSTEM_PROMPT] note[/SYSTEM_PROMPT][INST] U2[/INST]",
    ),
    (
        "transcript-system-in-middle",
        "transcript",
        [ChatMessage(U, "U"), ChatMessage(S, "note"), ChatMessage(U, "U2")],
        "User: U\nnote\n\nUser: U2\nAssistant:",
    ),
    (
        "names-folded-into-text",
        "transcript",
        [ChatMessage(U, "hi", name="Bob"), ChatMessage(A, "hello", name="Alice"), ChatMessage(U, "yo", name="Bob")],
        "User: Bob: hi\nAssistant: Alice: hello\nUser: Bob: yo\nAssistant:",
    ),
    (
        "name-already-prefixed",
        "chatml",
        [ChatMessage(U, "Bob: hi", name="Bob")],
        "<|im_start|>user\nBob: hi<|im_end|>\n<|im_start|>assistant\n",
    ),
    (
        "system-name-not-folded",
        "chatml",
        [ChatMessage(S, "Hello", name="example_user")],
        "<|im_start|>system\nHello<|im_end|>\n<|im_start|>assistant\n",
    ),
    (
        "prefill-with-name",
        "chatml",
        [ChatMessage(U, "hi"), ChatMessage(A, "Well", name="Alice")],
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nAlice: Well",
    ),
    (
        "prefill-keeps-trailing-whitespace",
        "transcript",
        [ChatMessage(U, "hi"), ChatMessage(A, "Well, \n")],
        "User: hi\nAssistant: Well, \n",
    ),
    (
        "empty-trailing-assistant-is-dropped",
        "transcript",
        [ChatMessage(U, "hi"), ChatMessage(A, "")],
        "User: hi\nAssistant:",
    ),
    (
        "empty-trailing-assistant-with-name-prefills-the-name",
        "transcript",
        [ChatMessage(U, "hi"), ChatMessage(A, "", name="Alice")],
        "User: hi\nAssistant: Alice: ",
    ),
    (
        "prefill-content-is-a-suffix-substring",
        "mistral",  # "s" occurs in "</s>": the cut must not be fooled
        [ChatMessage(U, "hi"), ChatMessage(A, "s")],
        "[INST] hi[/INST] s",
    ),
    (
        "leading-assistant-prefill-only",
        "llama3",
        [ChatMessage(A, "Once")],
        "<|start_header_id|>assistant<|end_header_id|>\n\nOnce",
    ),
    (
        "jinja-in-content-is-not-evaluated",
        "chatml",
        [ChatMessage(U, "{{ 7 * 7 }} {% if x %}{# c #}")],
        "<|im_start|>user\n{{ 7 * 7 }} {% if x %}{# c #}<|im_end|>\n<|im_start|>assistant\n",
    ),
    (
        "no-html-escaping",
        "transcript",
        [ChatMessage(U, "<b>&amp;\"'</b>")],
        "User: <b>&amp;\"'</b>\nAssistant:",
    ),
    (
        "multiline-and-cjk-content",
        "alpaca",
        [ChatMessage(U, "第一行\n第二行 😀")],
        "### Instruction:\n第一行\n第二行 😀\n\n### Response:\n",
    ),
]


@pytest.mark.parametrize(
    ("template", "messages", "expected"), [pytest.param(*case[1:], id=case[0]) for case in EDGE_CASES]
)
def test_edge_cases(template: str, messages: list[ChatMessage], expected: str) -> None:
    assert render_prompt(messages, template).prompt == expected


def test_builtin_ignores_custom_template_source() -> None:
    assert render_prompt(CONVERSATION, "chatml", "{{ nope }}").prompt == CONVERSATION_PROMPTS["chatml"]


@pytest.mark.parametrize("template", ["", "ChatML", "llama2", "vicuna"])
def test_unknown_template(template: str) -> None:
    with pytest.raises(InstructTemplateError) as excinfo:
        render_prompt(CONVERSATION, template)
    assert str(excinfo.value) == (
        f"unknown instruct template {template!r}; expected one of chatml, llama3, mistral, alpaca, gemma,"
        " transcript or 'custom'"
    )


def test_instruct_template_error_is_a_value_error() -> None:
    assert issubclass(InstructTemplateError, ValueError)


# --- custom templates ----------------------------------------------------------------------------

CUSTOM = (
    '{# stop: ["\\n### ", "</end>"] #}\n'
    "{% for m in messages %}### {{ m.role|capitalize }}\n{{ m.text }}\n</end>\n{% endfor %}"
    "{% if add_generation_prompt %}### Assistant\n{% endif %}"
)


def test_custom_template_renders_with_declared_stops() -> None:
    rendered = render_prompt(CONVERSATION, CUSTOM_TEMPLATE, CUSTOM)
    assert rendered == RenderedPrompt(
        "\n### System\nYou are a helpful writer.\n</end>\n### User\nHi\n</end>\n"
        "### Assistant\nHello!\n</end>\n### User\nWrite a haiku.\n</end>\n### Assistant\n",
        ("\n### ", "</end>"),
    )


def test_custom_template_prefill_and_names() -> None:
    messages = [ChatMessage("user", "hi", name="Bob"), ChatMessage("assistant", "Once", name="Alice")]
    rendered = render_prompt(messages, CUSTOM_TEMPLATE, CUSTOM)
    assert rendered.prompt == "\n### User\nBob: hi\n</end>\n### Assistant\nAlice: Once"


@pytest.mark.parametrize(
    ("source", "messages", "expected"),
    [
        pytest.param("{{ messages|length }}", CONVERSATION, ("4", ()), id="no-stop-declaration"),
        pytest.param(
            '{#- stop: ["A", "B", "A"] -#}\n{{ bos_token }}x',
            [],
            ("x", ("A", "B")),
            id="stop-dedup-and-whitespace-control",
        ),
        pytest.param(
            "{% for m in messages %}[{{ m.role }}|{{ m.name }}|{{ m.content }}]{% endfor %}",
            [ChatMessage("user", "u", name="Bob")],
            ("[user|Bob|u]", ()),
            id="raw-fields",
        ),
        pytest.param(
            "{% for m in messages %}{{ m.content.replace('a', 'b')|trim }}{% endfor %}",
            [ChatMessage("user", " banana ")],
            ("bbnbnb", ()),
            id="safe-string-methods",
        ),
        pytest.param(
            "{% for i in range(3) %}{{ i }}{% endfor %}{{ 2 ** 10 }}{{ '-' * 3 }}{{ 7 % 3 }}",
            [],
            ("0121024---1", ()),
            id="small-range-pow-mul-mod",
        ),
        pytest.param("line\n", [], ("line\n", ()), id="trailing-newline-kept"),
        pytest.param("{{ ([{'a': 'x'}] * 3)|join('-', attribute='a') }}", [], ("x-x-x", ()), id="join-attribute"),
    ],
)
def test_custom_template_cases(source: str, messages: list[ChatMessage], expected: tuple[str, tuple[str, ...]]) -> None:
    assert render_prompt(messages, CUSTOM_TEMPLATE, source) == RenderedPrompt(*expected)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param("{% for m in messages %}", "syntax error on line 1: Unexpected end of template.", id="unclosed"),
        pytest.param("ok\n\n{{ m.text }", "syntax error on line 3: unexpected '}'", id="line-number"),
        pytest.param("{{ x|center(9) }}", "syntax error on line 1: No filter named 'center'.", id="removed-filter"),
        pytest.param("{{ '%s'|format(1) }}", "syntax error on line 1: No filter named 'format'.", id="format-filter"),
        pytest.param(
            "{% include 'x' %}",
            "forbidden construct on line 1: 'include' is not allowed (a template is self-contained)",
            id="include",
        ),
        pytest.param(
            "{% extends 'x' %}",
            "forbidden construct on line 1: 'extends' is not allowed (a template is self-contained)",
            id="extends",
        ),
        pytest.param(
            "{% import 'x' as y %}",
            "forbidden construct on line 1: 'import' is not allowed (a template is self-contained)",
            id="import",
        ),
        pytest.param(
            "\n{{ messages.__class__.__mro__ }}",
            "forbidden construct on line 2: attribute '__mro__' is not allowed (names starting with '_')",
            id="dunder-attribute",
        ),
        pytest.param(
            "{{ messages['__class__'] }}",
            "forbidden construct on line 1: key '__class__' is not allowed (names starting with '_')",
            id="dunder-key",
        ),
        pytest.param("   \n", "the custom instruct template is empty", id="empty"),
        pytest.param(
            '{# stop: "</s>" #}x',
            'the stop declaration must be a JSON array of strings, e.g. ["</s>"]',
            id="stop-not-list",
        ),
        pytest.param(
            "{# stop: [1] #}x", 'the stop declaration must be a JSON array of strings, e.g. ["</s>"]', id="stop-not-str"
        ),
        pytest.param("{# stop: ['x'] #}x", "the stop declaration must be a JSON array of strings", id="stop-bad-json"),
        pytest.param('{# stop: [""] #}x', "stop strings must have 1–200 characters: ''", id="stop-empty-string"),
        pytest.param(
            '{# stop: ["a"] #}{# stop: ["b"] #}x',
            "declare the stop strings once: more than one {# stop: … #} comment",
            id="stop-twice",
        ),
        pytest.param(
            "{# stop: " + str(["s"] * 17).replace("'", '"') + " #}x",
            "at most 16 stop strings, got 17",
            id="too-many-stops",
        ),
    ],
)
def test_custom_template_rejected_when_compiling(source: str, message: str) -> None:
    for check in (
        lambda: validate_custom_template(source),
        lambda: render_prompt(CONVERSATION, CUSTOM_TEMPLATE, source),
    ):
        with pytest.raises(InstructTemplateError) as excinfo:
            check()
        assert str(excinfo.value).startswith(message)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param("{{ nope }}", "instruct template failed to render: 'nope' is undefined", id="undefined"),
        pytest.param(
            "{% for m in messages %}{{ m.nope }}{% endfor %}",
            "instruct template failed to render: 'dict object' has no attribute 'nope'",
            id="undefined-attribute",
        ),
        pytest.param(
            "{{ messages.append(1) }}",
            "instruct template failed to render: access to attribute 'append' of 'list' object is unsafe.",
            id="immutable",
        ),
        pytest.param(
            "{{ 'a'.ljust(100000000) }}",
            "instruct template failed to render: access to attribute 'ljust' of 'str' object is unsafe.",
            id="ljust",
        ),
        pytest.param(
            "{{ 'a' * 10000000 }}",
            "instruct template failed to render: * would build 10000000 characters/items (limit 4000000)",
            id="string-multiplication",
        ),
        pytest.param(
            "{{ 10000000 * [1] }}",
            "instruct template failed to render: * would build 10000000 characters/items (limit 4000000)",
            id="list-multiplication",
        ),
        pytest.param(
            "{{ ('a' * 1000000)|replace('', 'bbbbbbb') }}",
            "instruct template failed to render: replace would build 8000007 characters/items (limit 4000000)",
            id="replace-filter",
        ),
        pytest.param(
            "{{ ('a' * 1000000).replace('', 'bbbbbbb') }}",
            "instruct template failed to render: replace would build 8000007 characters/items (limit 4000000)",
            id="replace-method",
        ),
        pytest.param(
            "{{ 'bb'.join(['a'] * 3000000) }}",
            "instruct template failed to render: join would build 8999998 characters/items (limit 4000000)",
            id="join-method",
        ),
        pytest.param(
            "{{ (['aaaa'] * 2000000)|join('x') }}",
            "instruct template failed to render: join would build 9999999 characters/items (limit 4000000)",
            id="join-filter",
        ),
        pytest.param(
            "{{ ([{'a': 'x'}] * 3000)|join('y' * 10000, attribute='a') }}",
            "instruct template failed to render: join would build 29990000 characters/items (limit 4000000)",
            id="join-filter-attribute",
        ),
        pytest.param(
            "{{ '%99999999s' % 'a' }}",
            "instruct template failed to render: string % formatting is not allowed in instruct templates",
            id="percent-format",
        ),
        pytest.param(
            "{{ 10 ** 1000000 }}",
            "instruct template failed to render: exponents above 100 are not allowed",
            id="huge-power",
        ),
        pytest.param(
            "{% for i in range(60000) %}{% endfor %}{% for i in range(60000) %}{% endfor %}",
            "instruct template failed to render: range() may yield at most 100000 items per render",
            id="range-budget",
        ),
        pytest.param(
            "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
            "instruct template failed to render: recursion too deep",
            id="recursion",
        ),
        pytest.param("{{ lipsum() }}", "instruct template failed to render: 'lipsum' is undefined", id="lipsum"),
        pytest.param(
            "{{ raise_exception('system messages are not supported') }}",
            "instruct template failed to render: system messages are not supported",
            id="raise-exception",
        ),
    ],
)
def test_custom_template_rejected_when_rendering(source: str, message: str) -> None:
    for check in (
        lambda: validate_custom_template(source),
        lambda: render_prompt(CONVERSATION, CUSTOM_TEMPLATE, source),
    ):
        with pytest.raises(InstructTemplateError) as excinfo:
            check()
        assert str(excinfo.value) == message


def test_custom_template_that_cannot_prefill() -> None:
    source = "{% for m in messages %}{{ m.content|upper }}{% endfor %}"
    # plain rendering works …
    assert (
        render_prompt(CONVERSATION, CUSTOM_TEMPLATE, source).prompt == "YOU ARE A HELPFUL WRITER.HIHELLO!WRITE A HAIKU."
    )
    # … but a trailing assistant message cannot be continued, and validation says so
    expected = (
        "the instruct template must render the last assistant message's content verbatim"
        " (needed to continue a trailing assistant message: prefill)"
    )
    for check in (
        lambda: render_prompt(PREFILL, CUSTOM_TEMPLATE, source),
        lambda: validate_custom_template(source),
    ):
        with pytest.raises(InstructTemplateError) as excinfo:
            check()
        assert str(excinfo.value) == expected


def test_validate_rejects_template_rendering_nothing() -> None:
    with pytest.raises(InstructTemplateError, match=r"^the custom instruct template renders an empty prompt$"):
        validate_custom_template("{% if false %}x{% endif %}")


def test_validate_accepts_good_template() -> None:
    validate_custom_template(CUSTOM)  # no exception


def test_custom_without_source() -> None:
    with pytest.raises(InstructTemplateError, match=r"^instruct template 'custom' needs the template source$"):
        render_prompt(CONVERSATION, CUSTOM_TEMPLATE)


def test_custom_source_too_long() -> None:
    with pytest.raises(InstructTemplateError, match="exceeds 100000 characters"):
        render_prompt([], CUSTOM_TEMPLATE, "x" * 100_001)


def test_rendered_prompt_is_capped() -> None:
    # the built-in output is proportional to the input; the cap is enforced while streaming the render
    big = [ChatMessage("user", "x" * 1_000)]
    assert len(render_prompt(big, "transcript", max_chars=1_017).prompt) == 1_017
    with pytest.raises(InstructTemplateError, match=r"^the rendered prompt exceeds 1016 characters$"):
        render_prompt(big, "transcript", max_chars=1_016)
    with pytest.raises(InstructTemplateError, match=r"^the rendered prompt exceeds 100 characters$"):
        render_prompt([], CUSTOM_TEMPLATE, "{% for i in range(1000) %}xx{% endfor %}", max_chars=100)


def test_templates_are_compiled_once() -> None:
    # built-ins: one compiled object per name
    assert instruct._compiled_builtin("chatml") is instruct._compiled_builtin("chatml")
    # custom: cached by source
    source = "{% for m in messages %}{{ m.text }}{% endfor %}<cache-test>"
    before = instruct._compile_custom.cache_info()
    render_prompt(CONVERSATION, CUSTOM_TEMPLATE, source)
    render_prompt(CONVERSATION, CUSTOM_TEMPLATE, source)
    after = instruct._compile_custom.cache_info()
    assert after.misses == before.misses + 1
    assert after.hits >= before.hits + 1


def test_prefill_marker_never_leaks() -> None:
    for template in INSTRUCT_TEMPLATES:
        prompt = render_prompt(PREFILL, template).prompt
        assert "\ue000" not in prompt
        assert "prefill-" not in prompt
