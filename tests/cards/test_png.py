"""PNG/APNG card codec: chunk reading (tEXt/iTXt/zTXt), preference, writing, avatars, PNG errors."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest

from apps.cards import (
    CardError,
    export_card_json,
    export_card_png,
    minimal_png,
    parse_card_bytes,
)
from apps.cards import png as pngmod

SIG = b"\x89PNG\r\n\x1a\n"


def chunk(ctype: bytes, body: bytes, *, crc: int | None = None) -> bytes:
    value = zlib.crc32(body, zlib.crc32(ctype)) if crc is None else crc
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", value)


def b64json(doc: object) -> bytes:
    return base64.b64encode(json.dumps(doc, ensure_ascii=False).encode("utf-8"))


def text_chunk(keyword: str, doc: object) -> bytes:
    return chunk(b"tEXt", keyword.encode() + b"\0" + b64json(doc))


def itxt_chunk(keyword: str, payload: bytes, *, compressed: bool) -> bytes:
    body = zlib.compress(payload) if compressed else payload
    flag = b"\x01\x00" if compressed else b"\x00\x00"
    return chunk(b"iTXt", keyword.encode() + b"\0" + flag + b"zh\0" + "人物卡".encode() + b"\0" + body)


def ztxt_chunk(keyword: str, payload: bytes) -> bytes:
    return chunk(b"zTXt", keyword.encode() + b"\0\0" + zlib.compress(payload))


IHDR = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0))
IDAT = chunk(b"IDAT", zlib.compress(b"\0\xff\x00\x00\xff"))
IEND = chunk(b"IEND", b"")


def build_png(*middle: bytes) -> bytes:
    return SIG + IHDR + b"".join(middle) + IDAT + IEND


def chunk_list(data: bytes) -> list[tuple[bytes, bytes]]:
    return [(c.type, c.raw) for c in pngmod.read_chunks(data)]


def card_chunks(data: bytes) -> list[tuple[str, dict]]:
    out = []
    for c in pngmod.read_chunks(data):
        if c.type == b"tEXt":
            keyword, _, text = c.data.partition(b"\0")
            if keyword.lower() in (b"chara", b"ccv3"):
                out.append((keyword.decode(), json.loads(base64.b64decode(text).decode("utf-8"))))
    return out


V2_CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "林黛玉",
        "description": "潇湘馆的主人，才情出众。",
        "personality": "多愁善感，聪慧敏锐",
        "scenario": "大观园，暮春时节",
        "first_mes": "你来了？坐吧。",
        "mes_example": "<START>\n{{user}}: 你好\n{{char}}: 嗯。",
        "creator_notes": "作者的话：请温柔对待她。",
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": ["又是你。"],
        "tags": ["红楼梦", "古风"],
        "creator": "曹雪芹",
        "character_version": "1.0",
        "extensions": {"talkativeness": "0.5", "自定义": {"键": "值"}},
    },
}
V3_CARD = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {**V2_CARD["data"], "nickname": "颦儿", "group_only_greetings": []},
}


# ---- reading ----------------------------------------------------------------------------------------------


def test_png_with_ccv3_and_chara_prefers_ccv3_and_keeps_unrelated_text_chunk() -> None:
    # given a PNG with an unrelated tEXt chunk and both card chunks (chara first in the file)
    other = chunk(b"tEXt", b"Comment\0\xe4\xbd\x9c\xe8\x80\x85")
    v2_doc = {**V2_CARD, "data": {**V2_CARD["data"], "name": "旧名字"}}
    data = build_png(other, text_chunk("chara", v2_doc), text_chunk("ccv3", V3_CARD))

    # when
    parsed = parse_card_bytes(data, filename="黛玉.png")

    # then the ccv3 card wins, and the avatar is the PNG minus the card chunks
    assert parsed.spec == "v3"
    assert parsed.source_format == "png"
    assert parsed.card_v3["data"]["name"] == "林黛玉"
    assert parsed.card_v3["data"]["nickname"] == "颦儿"
    assert parsed.original == V3_CARD
    assert parsed.avatar_png == SIG + IHDR + other + IDAT + IEND
    assert parsed.warnings == ()


@pytest.mark.parametrize("keyword", ["CCV3", "Ccv3", "ccv3"])
def test_card_keyword_is_case_insensitive(keyword: str) -> None:
    parsed = parse_card_bytes(build_png(text_chunk("Chara", V2_CARD), text_chunk(keyword, V3_CARD)))

    assert parsed.spec == "v3"
    assert parsed.card_v3["data"]["nickname"] == "颦儿"


def test_chara_chunk_only_v2() -> None:
    parsed = parse_card_bytes(build_png(text_chunk("chara", V2_CARD)))

    assert parsed.spec == "v2"
    assert parsed.original == V2_CARD
    assert parsed.card_v3["data"]["description"] == "潇湘馆的主人，才情出众。"


def test_v3_card_inside_chara_chunk_is_still_v3() -> None:
    parsed = parse_card_bytes(build_png(text_chunk("chara", V3_CARD)))

    assert parsed.spec == "v3"
    assert parsed.card_v3["data"]["nickname"] == "颦儿"


@pytest.mark.parametrize("compressed", [False, True])
def test_itxt_card_chunk(compressed: bool) -> None:
    data = build_png(itxt_chunk("ccv3", b64json(V3_CARD), compressed=compressed))

    parsed = parse_card_bytes(data)

    assert parsed.spec == "v3"
    assert parsed.original == V3_CARD


def test_itxt_with_raw_json_text_is_accepted() -> None:
    raw = json.dumps(V2_CARD, ensure_ascii=False).encode("utf-8")
    parsed = parse_card_bytes(build_png(itxt_chunk("chara", raw, compressed=True)))

    assert parsed.original == V2_CARD


def test_ztxt_card_chunk() -> None:
    parsed = parse_card_bytes(build_png(ztxt_chunk("chara", b64json(V2_CARD))))

    assert parsed.spec == "v2"
    assert parsed.card_v3["data"]["tags"] == ["红楼梦", "古风"]


def test_base64_with_line_breaks_and_missing_padding() -> None:
    text = b64json(V2_CARD).rstrip(b"=")
    wrapped = b"\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    parsed = parse_card_bytes(build_png(chunk(b"tEXt", b"chara\0" + wrapped)))

    assert parsed.original == V2_CARD


def test_apng_card_is_read_and_animation_chunks_kept() -> None:
    actl = chunk(b"acTL", struct.pack(">II", 2, 0))
    fctl = chunk(b"fcTL", struct.pack(">IIIIIHHBB", 0, 1, 1, 0, 0, 1, 10, 0, 0))
    fdat = chunk(b"fdAT", struct.pack(">I", 1) + zlib.compress(b"\0\x00\xff\x00\xff"))
    data = SIG + IHDR + actl + fctl + text_chunk("ccv3", V3_CARD) + IDAT + fdat + IEND

    parsed = parse_card_bytes(data)

    assert parsed.source_format == "apng"
    assert parsed.avatar_png == SIG + IHDR + actl + fctl + IDAT + fdat + IEND
    exported = export_card_png(parsed.card_v3, parsed.original, parsed.avatar_png)
    kinds = [t for t, _ in chunk_list(exported)]
    assert kinds == [b"IHDR", b"acTL", b"fcTL", b"IDAT", b"fdAT", b"tEXt", b"tEXt", b"IEND"]


def test_unreadable_ccv3_falls_back_to_chara_with_warning() -> None:
    data = build_png(chunk(b"tEXt", b"ccv3\0!!!not base64!!!"), text_chunk("chara", V2_CARD))

    parsed = parse_card_bytes(data)

    assert parsed.spec == "v2"
    assert parsed.warnings == ("Skipped an unreadable 'ccv3' tEXt chunk: The card chunk is not valid base64.",)


def test_bad_crc_on_ancillary_card_chunk_is_tolerated_and_kept_out_of_avatar() -> None:
    bad = chunk(b"tEXt", b"chara\0" + b64json(V2_CARD), crc=0)
    other = chunk(b"tIME", b"\x07\xea\x01\x01\x00\x00\x00", crc=1)  # bad CRC, ancillary, unrelated
    data = build_png(other, bad)

    parsed = parse_card_bytes(data)

    assert parsed.original == V2_CARD
    assert parsed.avatar_png == SIG + IHDR + other + IDAT + IEND


# ---- writing ----------------------------------------------------------------------------------------------


def test_export_png_writes_v2_chara_and_v3_ccv3_before_iend_keeping_other_chunks() -> None:
    other = chunk(b"tEXt", b"Software\0paint")
    parsed = parse_card_bytes(build_png(other, text_chunk("chara", V2_CARD)))

    exported = export_card_png(parsed.card_v3, parsed.original, parsed.avatar_png)

    raws = [raw for _, raw in chunk_list(exported)]
    assert raws[:3] == [IHDR, other, IDAT]
    assert raws[-1] == IEND
    assert card_chunks(exported) == [
        ("chara", V2_CARD),
        ("ccv3", export_card_json(parsed.card_v3, parsed.original, spec="v3")),
    ]
    assert card_chunks(exported)[1][1]["spec"] == "chara_card_v3"


def test_reexport_replaces_old_chunks_exactly_one_of_each() -> None:
    # given a PNG that already carries chara (tEXt), ccv3 (zTXt) and an iTXt chara
    data = build_png(
        text_chunk("chara", V2_CARD), ztxt_chunk("CCV3", b64json(V3_CARD)), itxt_chunk("Chara", b"x", compressed=False)
    )
    parsed = parse_card_bytes(data)

    # when exported twice
    once = export_card_png(parsed.card_v3, parsed.original, data)
    twice = export_card_png(parsed.card_v3, parsed.original, once)

    # then exactly one chara and one ccv3 chunk, and nothing else changed
    text_chunks = [c for c in pngmod.read_chunks(twice) if c.type in (b"tEXt", b"iTXt", b"zTXt")]
    assert [c.data.split(b"\0")[0] for c in text_chunks] == [b"chara", b"ccv3"]
    assert once == twice
    assert parse_card_bytes(twice).original == export_card_json(parsed.card_v3, parsed.original, spec="v3")


def test_export_without_avatar_uses_minimal_png() -> None:
    card = {"data": {"name": "无头像", "description": "没有图片的角色"}}

    exported = export_card_png(card, None, None)

    parsed = parse_card_bytes(exported)
    assert parsed.card_v3["data"]["name"] == "无头像"
    assert parsed.avatar_png == minimal_png()


def test_minimal_png_is_valid() -> None:
    data = minimal_png(2, 3, (255, 0, 0, 255))

    chunks = pngmod.read_chunks(data)
    assert [c.type for c in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", chunks[0].data) == (2, 3, 8, 6, 0, 0, 0)
    assert zlib.decompress(chunks[1].data) == (b"\0" + b"\xff\x00\x00\xff" * 2) * 3
    with pytest.raises(ValueError):
        minimal_png(0, 1)


def test_export_with_non_png_avatar_is_bad_png() -> None:
    with pytest.raises(CardError) as info:
        export_card_png({"data": {"name": "甲"}}, None, b"GIF89a....")

    assert info.value.code == "bad_png"


# ---- errors -----------------------------------------------------------------------------------------------


def test_png_without_card_chunk() -> None:
    with pytest.raises(CardError) as info:
        parse_card_bytes(build_png(chunk(b"tEXt", b"Comment\0hello")))

    assert info.value.code == "no_card_chunk"
    assert info.value.message == "The PNG image has no character card data (no 'ccv3' or 'chara' text chunk)."


def test_bad_base64() -> None:
    with pytest.raises(CardError) as info:
        parse_card_bytes(build_png(chunk(b"tEXt", b"chara\0%%%%")))

    assert info.value.code == "bad_base64"


def test_bad_json_in_chunk() -> None:
    payload = base64.b64encode("{ 这不是 JSON".encode())
    with pytest.raises(CardError) as info:
        parse_card_bytes(build_png(chunk(b"tEXt", b"chara\0" + payload)))

    assert info.value.code == "bad_json"


def test_non_utf8_json_in_chunk() -> None:
    with pytest.raises(CardError) as info:
        parse_card_bytes(build_png(chunk(b"tEXt", b"chara\0" + base64.b64encode(b'{"name": "\xff"}'))))

    assert info.value.code == "bad_json"
    assert info.value.message == "The card JSON is not valid UTF-8."


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (SIG + IHDR, "The PNG file is truncated (no IEND chunk)."),
        (SIG + IHDR[:10], "The PNG file is truncated (no IEND chunk)."),
        (SIG + IHDR + IDAT[:-3], "The PNG file is truncated inside a IDAT chunk."),
        (SIG + IDAT + IEND, "The PNG file does not start with an IHDR chunk."),
        (SIG + IHDR + chunk(b"IDAT", b"x", crc=0) + IEND, "The PNG file is corrupt (CRC mismatch in IDAT)."),
        (SIG + IHDR + b"\x00\x00\x00\x00\x00\x00\x00\x00" + IEND, "The PNG file has an invalid chunk type."),
    ],
)
def test_corrupt_png(data: bytes, message: str) -> None:
    with pytest.raises(CardError) as info:
        parse_card_bytes(data)

    assert (info.value.code, info.value.message) == ("bad_png", message)


def test_corrupt_compressed_card_chunk() -> None:
    data = build_png(chunk(b"zTXt", b"chara\0\0" + b"not zlib"))

    with pytest.raises(CardError) as info:
        parse_card_bytes(data)

    assert info.value.code == "bad_png"


def test_compressed_card_chunk_bomb_is_too_large() -> None:
    from apps.cards import Limits

    data = build_png(ztxt_chunk("chara", b"A" * 5_000_000))

    with pytest.raises(CardError) as info:
        parse_card_bytes(data, limits=Limits(max_json_bytes=100_000))

    assert info.value.code == "too_large"
