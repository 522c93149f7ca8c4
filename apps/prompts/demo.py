"""`make run` demo content: one prompt for the demo user, so the README's curl lines work at once."""

from __future__ import annotations

from typing import Any

from apps.prompts import services
from apps.prompts.models import Prompt

DEMO_TITLE = "示例：故事开头"


def demo_setup(*, user: Any, stdout: Any) -> None:
    prompt = Prompt.objects.filter(author=user, title=DEMO_TITLE).first()
    if prompt is None:
        prompt = services.prompt_create(
            author=user,
            title=DEMO_TITLE,
            description="make run 创建的示例提示词",
            contents=[
                services.ContentSpec(order=1, type="text", role="system", content="你是一名专业的小说作家。"),
                services.ContentSpec(
                    order=2,
                    type="text",
                    role="system",
                    content="情节设定：{{故事背景}}，主角名为{{主角名字}}。现在是{{date}}。",
                ),
            ],
        )
    stdout.write(f"Demo prompt: id {prompt.pk} ({DEMO_TITLE})")
