"""Issue 20, item 4: card files cannot inflate without bound.

Before: every `chara`/`ccv3` chunk of a PNG was inflated up to ~20 MB and all were kept before the
first was decoded — an 816 KB PNG took 42 s and ~1 GB (here: a 797 KB PNG, 22 s and +836 MiB); a
CHARX whose central directory lists 200,000 members cost ~1 s and +116 MiB before its member count
was checked. Now card chunks are read lazily in ST's order (ccv3 first) until one decodes, with the
text read over all of them capped (`Limits.max_card_text_bytes`, 24 MiB) and at most
`max_card_chunks` tried; a CHARX's declared directory is checked before `zipfile` parses it.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import struct
import time
import zipfile
import zlib

import httpx
import pytest

from apps.cards import CardError, Limits, parse_card_bytes
from tests.security.bounds import HealthProbe, measure

MIB = 1024 * 1024
SIG = b"\x89PNG\r\n\x1a\n"


def chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(ctype)))


def png(*middle: bytes) -> bytes:
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0))
    return SIG + ihdr + b"".join(middle) + chunk(b"IDAT", zlib.compress(b"\0" * 5)) + chunk(b"IEND", b"")


@functools.cache
def bomb_chunk(keyword: bytes = b"chara", size: int = 20 * MIB - 4096) -> bytes:
    """A zTXt card chunk of ~20 KB that inflates to `size` bytes of valid base64 (junk once decoded)."""
    return chunk(b"zTXt", keyword + b"\0\0" + zlib.compress(b"A" * size, 9))


def card_chunk(keyword: bytes, name: str) -> bytes:
    doc = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": name, "first_mes": "Hi"}}
    return chunk(b"tEXt", keyword + b"\0" + base64.b64encode(json.dumps(doc).encode()))


@pytest.fixture
def token(user):
    from apps.accounts.services import token_create

    return token_create(user=user).token


def _import(base_url: str, token: str, name: str, data: bytes) -> httpx.Response:
    return httpx.post(
        f"{base_url}/api/v1/characters/import",
        files={"file": (name, data, "application/octet-stream")},
        headers={"Authorization": f"Bearer {token}", "Accept-Language": "en"},
        timeout=60,
    )


@pytest.mark.django_db(transaction=True)
def test_the_png_decompression_bomb_is_refused_quickly(live_server_url, token):
    bomb = png(*[bomb_chunk() for _ in range(40)])
    assert len(bomb) < 800 * 1024
    with HealthProbe(live_server_url) as health, measure() as cost:
        response = _import(live_server_url, token, "bomb.png", bomb)
    assert response.status_code == 400
    assert response.json()["code"] == "too_large"
    assert cost.seconds < 9 and cost.rss_peak_mib < 200, cost
    assert health.failures == 0 and health.worst < 1.0, health.times


def many_members_zip(count: int) -> bytes:
    """A stored zip of `count` empty members, written by hand (zipfile takes seconds for this); past
    65,535 members the counts are in a zip64 end-of-directory record, as zipfile writes them."""
    local, central = [], []
    offset = 0
    for i in range(count):
        name = b"%x" % i
        local.append(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name)
        header = (b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0, offset)
        central.append(struct.pack("<4s6H3L5H2L", *header) + name)
        offset += len(local[-1])
    directory = b"".join(central)
    end64 = b""
    short = count
    if count > 0xFFFF:
        short = 0xFFFF
        record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(directory), offset)
        locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, offset + len(directory), 1)
        end64 = record + locator
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, short, short, len(directory), offset, 0)
    return b"".join(local) + directory + end64 + end


@pytest.mark.django_db(transaction=True)
def test_a_charx_listing_200000_members_is_refused_before_zipfile_reads_its_directory(live_server_url, token):
    data = many_members_zip(200_000)
    assert len(data) < 20 * MIB
    with measure() as cost:
        response = _import(live_server_url, token, "many.charx", data)
    assert response.status_code == 400 and response.json()["code"] == "too_many_entries"
    assert response.json()["reason"] == "The CHARX archive has 200000 entries; at most 2000 are accepted."
    assert cost.seconds < 3 and cost.rss_peak_mib < 64, cost


def test_the_hand_written_archives_are_valid():
    assert len(zipfile.ZipFile(io.BytesIO(many_members_zip(70_000))).infolist()) == 70_000


def test_a_directory_larger_than_its_declared_count_is_refused_too():
    """zipfile reads the directory by its size, not by the count the record declares."""
    data = bytearray(many_members_zip(3000))
    data[-12:-10] = struct.pack("<H", 1)  # declare 1 entry on this disk …
    data[-14:-12] = struct.pack("<H", 1)  # … and in all
    with pytest.raises(CardError) as info:
        parse_card_bytes(bytes(data), limits=Limits(max_zip_directory_bytes=64 * 1024))
    assert info.value.code == "too_many_entries"
    assert "member list" in info.value.message


def test_the_first_decodable_chunk_wins_and_later_ones_are_never_inflated():
    data = png(card_chunk(b"ccv3", "First"), *[bomb_chunk(b"ccv3") for _ in range(40)], card_chunk(b"chara", "Old"))
    started = time.perf_counter()
    parsed = parse_card_bytes(data)
    assert parsed.card_v3["data"]["name"] == "First" and not parsed.warnings
    assert time.perf_counter() - started < 1.0


def test_ccv3_is_preferred_wherever_it_is_in_the_file():
    """As SillyTavern: the first ccv3 chunk, else the first chara."""
    parsed = parse_card_bytes(png(card_chunk(b"chara", "V2"), card_chunk(b"ccv3", "V3"), card_chunk(b"ccv3", "V3b")))
    assert parsed.card_v3["data"]["name"] == "V3"


def test_an_unreadable_ccv3_still_falls_back_to_chara():
    parsed = parse_card_bytes(png(bomb_chunk(b"ccv3", 3 * MIB), card_chunk(b"chara", "Fallback")))
    assert parsed.card_v3["data"]["name"] == "Fallback"
    assert len(parsed.warnings) == 1 and "ccv3" in parsed.warnings[0]


def test_the_text_read_over_all_chunks_is_capped():
    limits = Limits(max_json_bytes=1000, max_card_text_bytes=5000)
    data = png(*[bomb_chunk(size=1900) for _ in range(10)], card_chunk(b"chara", "Never reached"))
    with pytest.raises(CardError) as info:
        parse_card_bytes(data, limits=limits)
    assert info.value.code == "too_large"  # the first chunk's error: its JSON is over max_json_bytes
    # two chunks read whole (3,800 bytes), the third up to the 1,200 left: then nothing more is read
    from apps.cards import png as pngmod

    texts = list(pngmod.find_card_texts(pngmod.read_chunks(data), limits=limits))
    assert [t.error.message if t.error else "ok" for t in texts] == [
        "ok",
        "ok",
        "The card text chunks of the PNG hold more text than accepted in all.",
        "The card text chunks of the PNG hold more text than accepted in all.",
    ]


def test_at_most_max_card_chunks_are_tried():
    data = png(*[chunk(b"tEXt", b"chara\0!!") for _ in range(1000)], card_chunk(b"chara", "Late"))
    with pytest.raises(CardError) as info:
        parse_card_bytes(data)
    assert info.value.code == "bad_base64"
    from apps.cards import png as pngmod

    assert len(list(pngmod.find_card_texts(pngmod.read_chunks(data)))) == Limits().max_card_chunks
