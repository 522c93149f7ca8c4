"""The playground in chromium, writing mode: sign in, parameters from the prompt, Preview, a live stream
that grows, Stop with the delivered part charged, the new balance, and errors in the user's language."""

from __future__ import annotations

import time
from typing import Any

import pytest

from apps.billing.models import Charge, Hold
from apps.generation.models import Generation
from tests.fakes.upstream import Reply
from tests.playground.conftest import PASSWORD, sign_in_with_token

pytestmark = pytest.mark.django_db(transaction=True)

CHUNKS = [
    "在繁华的都市中，",
    "程序员李明",
    "突然发现",
    "自己的代码",
    "开始自己思考。",
    "他盯着屏幕，",
    "一行行字符",
    "像潮水般涌来。",
]


def grows(page: Any, testid: str, *, samples: int, timeout: float = 15) -> list[int]:
    """Poll the element's text until it has been seen with `samples` different lengths, increasing."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while len(seen) < samples:
        assert time.monotonic() < deadline, f"{testid} did not grow: lengths seen {seen}"
        length = len(page.get_by_test_id(testid).inner_text())
        if length and (not seen or length != seen[-1]):
            seen.append(length)
        page.wait_for_timeout(20)
    return seen


def test_sign_in_fill_the_parameters_preview_and_stream_an_answer(
    playground, fake_upstream, make_model, writing_prompt, user, desktop_and_phone
):
    make_model(max_output_tokens=4096)
    page = playground()
    desktop_and_phone(page, "playground-signin")

    # sign in with a password: the token goes to session storage
    page.get_by_test_id("login-username").fill("alice")
    page.get_by_test_id("login-password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    balance = page.get_by_test_id("balance")
    balance.wait_for()
    assert page.evaluate("Object.keys(sessionStorage).length") == 1
    assert balance.get_attribute("data-free") == "2000" and balance.get_attribute("data-paid") == "100000"

    # the prompt (by title), the model (by id) and the parameters found in the prompt's contents
    prompt = page.get_by_test_id("prompt-select")
    assert prompt.locator("option").all_inner_texts() == ["故事开头"]
    assert page.get_by_test_id("model-select").input_value() == "gpt-4-turbo"
    page.get_by_test_id("param-故事背景").fill("现代都市")
    page.get_by_test_id("param-主角名字").fill("李明")
    page.get_by_test_id("user-input").fill("请写一个故事开头")
    page.get_by_test_id("preview").click()
    messages = page.get_by_test_id("preview-messages").locator("li")
    messages.first.wait_for()
    assert messages.count() == 3
    assert "情节设定：现代都市，主角名为李明。" in messages.nth(1).inner_text()
    assert not Generation.objects.exists() and fake_upstream.completion_requests == []

    # generate: the text grows while it streams, then the consumption and the new balance
    fake_upstream.script(Reply(chunks=CHUNKS, chunk_delay=0.15))
    page.get_by_test_id("generate").click()
    lengths = grows(page, "output", samples=3)
    assert lengths == sorted(lengths)
    consumption = page.get_by_test_id("consumption")
    consumption.wait_for()
    text = "".join(CHUNKS)
    assert page.get_by_test_id("output").inner_text() == text
    assert consumption.get_attribute("data-total-cost") == str(len(text))  # input below the free threshold
    assert len(text) == 47 and "Charged 47 characters" in consumption.inner_text()
    page.wait_for_function("() => document.querySelector('[data-testid=balance]').dataset.free === '1953'")
    assert fake_upstream.completion_requests[-1].json["messages"][1]["content"] == "情节设定：现代都市，主角名为李明。"
    page.locator("#generations tbody tr").first.wait_for()
    assert page.locator("#generations tbody tr").count() == 1
    desktop_and_phone(page, "playground-writing")


def test_stop_ends_the_stream_and_the_delivered_part_is_charged(
    playground, fake_upstream, make_model, writing_prompt, token
):
    make_model()
    page = playground()
    sign_in_with_token(page, token)
    page.get_by_test_id("user-input").fill("继续")
    fake_upstream.script(Reply(chunks=[f"第{i}句。" for i in range(40)], chunk_delay=0.3))

    page.get_by_test_id("generate").click()
    grows(page, "output", samples=3)
    page.get_by_test_id("stop").click()

    consumption = page.get_by_test_id("consumption")
    consumption.wait_for()
    delivered = page.get_by_test_id("output").inner_text()
    record = Generation.objects.get()
    assert record.status == "cancelled"
    assert record.content == delivered and 0 < len(delivered) < len("".join(f"第{i}句。" for i in range(40)))
    assert consumption.get_attribute("data-total-cost") == str(len(delivered)) == str(record.total_cost)
    assert Charge.objects.get().total_cost == len(delivered)
    assert not Hold.objects.filter(status="active").exists()
    assert page.get_by_test_id("stop").is_disabled()


@pytest.mark.no_funds
def test_a_402_and_a_validation_error_show_the_envelope_message_in_the_browser_language(
    browser, live_server_url, fake_upstream, make_model, writing_prompt, token, settings, screenshot
):
    settings.BILLING_DAILY_FREE_QUOTA = 0
    make_model()
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{live_server_url}/playground/")
    sign_in_with_token(page, token)

    page.get_by_test_id("generate").click()
    error = page.get_by_test_id("error")
    error.wait_for()
    assert "字数余额不足" in error.inner_text(), error.inner_text()  # zh-CN: Accept-Language from the browser
    assert error.get_attribute("data-status") == "402"
    screenshot(page, "playground-error-402", full_page=False)

    page.fill("#max-tokens", "999999")
    page.get_by_test_id("generate").click()
    page.wait_for_function("() => document.querySelector('[data-testid=error]').dataset.status === '400'")
    assert "maxTokens" in error.inner_text()
    assert fake_upstream.completion_requests == [] and not Generation.objects.exists()
    context.close()
