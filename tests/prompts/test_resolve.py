import pytest

from apps.characters.models import Character, CharacterField
from apps.core.errors import ApplicationError
from apps.novels.models import Novel
from apps.prompts.models import Prompt, PromptContent
from apps.prompts.rendering import render_character, render_worldview
from apps.prompts.selectors import ResolvedContent, prompt_resolve
from apps.worldviews.models import Worldview, WorldviewField

pytestmark = pytest.mark.django_db


def make_card(novel, name, fields):
    card = Character.objects.create(novel=novel, name=name)
    for i, (key, value) in enumerate(fields):
        CharacterField.objects.create(character=card, order=i, key=key, value=value)
    return card


def make_world(novel, name, fields):
    world = Worldview.objects.create(novel=novel, name=name)
    for i, (key, value) in enumerate(fields):
        WorldviewField.objects.create(worldview=world, order=i, key=key, value=value)
    return world


@pytest.mark.parametrize(
    ("name", "fields", "expected"),
    [
        (
            "李明",
            [("年龄", "28岁"), ("职业", "程序员"), ("性格", "内向、细心")],
            "【人物卡：李明】\n姓名: 李明\n年龄: 28岁\n职业: 程序员\n性格: 内向、细心",
        ),
        ("李明", [], "【人物卡：李明】\n姓名: 李明"),
        ("李明", [("姓名", "李明（化名）"), ("年龄", "28岁")], "【人物卡：李明】\n姓名: 李明（化名）\n年龄: 28岁"),
    ],
)
def test_render_character_exact(name, fields, expected):
    assert render_character(name, fields) == expected


def test_render_worldview_exact():
    assert (
        render_worldview("赛博都市", [("时代", "2077年"), ("科技", "义体普及")])
        == "【世界观：赛博都市】\n时代: 2077年\n科技: 义体普及"
    )


def test_resolve_orders_contents_and_renders_references(user):
    novel = Novel.objects.create(owner=user, title="n")
    card = make_card(novel, "李明", [("年龄", "28岁"), ("职业", "程序员")])
    world = make_world(novel, "现代都市", [("时代", "2025年")])
    prompt = Prompt.objects.create(author=user, title="p")
    PromptContent.objects.create(prompt=prompt, order=30, type="text", role="user", content="写吧")
    PromptContent.objects.create(prompt=prompt, order=10, type="character", reference_id=card.pk, name="主角")
    PromptContent.objects.create(prompt=prompt, order=20, type="worldview", reference_id=world.pk, name="世界")
    PromptContent.objects.create(prompt=prompt, order=5, type="text", content="你是作家")
    resolved = prompt_resolve(user=user, prompt_id=prompt.pk)
    assert resolved.contents == (
        ResolvedContent(5, "text", "system", "你是作家", ""),
        ResolvedContent(10, "character", "system", "【人物卡：李明】\n姓名: 李明\n年龄: 28岁\n职业: 程序员", "主角"),
        ResolvedContent(20, "worldview", "system", "【世界观：现代都市】\n时代: 2025年", "世界"),
        ResolvedContent(30, "text", "user", "写吧", ""),
    )


def test_missing_prompt_is_404_with_exact_message(user):
    with pytest.raises(ApplicationError) as err:
        prompt_resolve(user=user, prompt_id=999)
    assert (err.value.status_code, err.value.message) == (404, "提示词 ID=999 不存在")


def test_someone_elses_private_prompt_is_400_with_exact_message(user, other_user):
    prompt = Prompt.objects.create(author=other_user, title="p")
    with pytest.raises(ApplicationError) as err:
        prompt_resolve(user=user, prompt_id=prompt.pk)
    assert (err.value.status_code, err.value.message) == (400, "无权使用此提示词")


def test_public_prompt_of_someone_else_skips_their_cards_but_renders_mine(user, other_user):
    their_novel = Novel.objects.create(owner=other_user, title="theirs")
    their_card = make_card(their_novel, "秘密人物", [("秘密", "不该泄露")])
    prompt = Prompt.objects.create(author=other_user, title="p", is_public=True)
    PromptContent.objects.create(prompt=prompt, order=1, type="character", reference_id=their_card.pk)
    PromptContent.objects.create(prompt=prompt, order=2, type="text", content="正文")
    # the author sees their card, another user does not (and gets no error)
    assert len(prompt_resolve(user=other_user, prompt_id=prompt.pk).contents) == 2
    resolved = prompt_resolve(user=user, prompt_id=prompt.pk)
    assert [c.text for c in resolved.contents] == ["正文"]
    assert "不该泄露" not in repr(resolved)


def test_deleted_novel_reference_is_skipped(user):
    novel = Novel.objects.create(owner=user, title="n")
    card = make_card(novel, "李明", [])
    prompt = Prompt.objects.create(author=user, title="p")
    PromptContent.objects.create(prompt=prompt, order=1, type="character", reference_id=card.pk)
    PromptContent.objects.create(prompt=prompt, order=2, type="text", content="仍然可用")
    novel.delete()
    assert [c.text for c in prompt_resolve(user=user, prompt_id=prompt.pk).contents] == ["仍然可用"]


@pytest.mark.parametrize("count", [1, 10, 60])
def test_resolver_query_count_is_fixed(user, django_assert_num_queries, count):
    novel = Novel.objects.create(owner=user, title="n")
    prompt = Prompt.objects.create(author=user, title="p")
    for i in range(count):
        card = make_card(novel, f"人物{i}", [("年龄", str(i)), ("职业", "x")])
        world = make_world(novel, f"世界{i}", [("时代", str(i))])
        PromptContent.objects.create(prompt=prompt, order=3 * i, type="character", reference_id=card.pk)
        PromptContent.objects.create(prompt=prompt, order=3 * i + 1, type="worldview", reference_id=world.pk)
        PromptContent.objects.create(prompt=prompt, order=3 * i + 2, type="text", content=f"t{i}")
    with django_assert_num_queries(6):
        resolved = prompt_resolve(user=user, prompt_id=prompt.pk)
    assert len(resolved.contents) == 3 * count


def test_resolve_messages_in_english(user, other_user, settings):
    from django.utils import translation

    prompt = Prompt.objects.create(author=other_user, title="p")
    with translation.override("en"):
        with pytest.raises(ApplicationError) as err:
            prompt_resolve(user=user, prompt_id=prompt.pk)
        assert err.value.message == "No permission to use this prompt"
        with pytest.raises(ApplicationError) as err:
            prompt_resolve(user=user, prompt_id=12345)
        assert err.value.message == "Prompt ID=12345 does not exist"


def test_the_cached_snapshot_holds_plain_values_under_its_own_key(user):
    import pickle

    from django.core.cache import cache

    from apps.prompts.selectors import CachedContent, prompt_cache_key

    # given: a prompt with a text and a name
    prompt = Prompt.objects.create(author=user, title="t")
    PromptContent.objects.create(prompt=prompt, order=2, type="text", role="user", content="two", name="n")
    PromptContent.objects.create(prompt=prompt, order=1, type="text", role="system", content="one")
    # when: resolved twice (the second from the cache)
    first = prompt_resolve(user=user, prompt_id=prompt.pk)
    second = prompt_resolve(user=user, prompt_id=prompt.pk)
    # then: the same contents, and the entry is plain values (cheap to unpickle, no model instances) under
    # the key an earlier release (which cached PromptContent instances under `prompt:<id>`) never reads
    assert first == second
    assert [(c.order, c.role, c.text, c.name) for c in second.contents] == [
        (1, "system", "one", ""),
        (2, "user", "two", "n"),
    ]
    assert prompt_cache_key(prompt.pk) == f"prompt:v2:{prompt.pk}"
    author_id, is_public, title, contents = cache.get(prompt_cache_key(prompt.pk))
    assert (author_id, is_public, title) == (user.pk, False, "t")
    assert contents == [
        CachedContent(1, "text", "system", "one", "", None),
        CachedContent(2, "text", "user", "two", "n", None),
    ]
    assert b"PromptContent" not in pickle.dumps(contents)
