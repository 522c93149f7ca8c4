"""Character card codec: SillyTavern-compatible V1/V2/V3 cards in PNG/APNG, JSON and CHARX.

Pure Python (stdlib only), no Django imports; ``messages.py`` is the Django side (settings and translated
errors) and is not imported here. See ``docs/cards.md`` for formats, mapping decisions, limits and error
codes.
"""

from .book import (
    book_to_lorebook_v3,
    character_book_to_st_entries,
    character_book_to_st_world,
    is_lorebook_v3,
    lorebook_v3_to_book,
    lorebook_v3_to_st_entries,
    normalize_character_book,
    st_entries_to_character_book,
    st_entries_to_lorebook_v3,
    st_world_entries,
)
from .errors import DEFAULT_LIMITS, CardError, CardErrorCode, Limits
from .fields import CARD_FIELD_LABELS, card_fields
from .model import (
    V3_DATA_KEYS,
    detect_spec,
    export_card_json,
    normalize_card,
    normalize_card_v3,
    to_v2,
)
from .parse import (
    CardAsset,
    ParsedCard,
    dumps_card,
    export_card_png,
    load_card_json,
    parse_card_bytes,
    parse_card_json,
)
from .png import minimal_png

__all__ = [
    "CARD_FIELD_LABELS",
    "DEFAULT_LIMITS",
    "V3_DATA_KEYS",
    "CardAsset",
    "CardError",
    "CardErrorCode",
    "Limits",
    "ParsedCard",
    "book_to_lorebook_v3",
    "card_fields",
    "character_book_to_st_entries",
    "character_book_to_st_world",
    "detect_spec",
    "dumps_card",
    "export_card_json",
    "export_card_png",
    "is_lorebook_v3",
    "load_card_json",
    "lorebook_v3_to_book",
    "lorebook_v3_to_st_entries",
    "minimal_png",
    "normalize_card",
    "normalize_card_v3",
    "normalize_character_book",
    "parse_card_bytes",
    "parse_card_json",
    "st_entries_to_character_book",
    "st_entries_to_lorebook_v3",
    "st_world_entries",
    "to_v2",
]
