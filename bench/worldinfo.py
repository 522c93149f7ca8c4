"""World-info activation benchmark (not a test).

5,000 entries (plain single-word and phrase keys, ~10 % regex keys, secondary keys, inclusion groups,
per-entry scan depths, probabilities, a few constants; recursion on) over a 200-message chat.
Prints the median activation CPU time (``time.process_time``) for: a cold start (all caches
cleared), a warm repeat of the same turn, the same turn with *equal but new* Entry objects (as when
rebuilt from the database), the turn after editing one entry (the other Entry objects kept), the
turn after an edit when every Entry object is rebuilt (as the Django layer does when a book changes),
and the next turn (two new messages,
the rest cached) — at the default scan depth 2 and at scan depth 200 (every message scanned).

With ``--macros`` (default on), the same book with macros as a roleplay turn runs it: 10 % of the
entries get an extra key ``{{char}}'s <key>`` and 30 % a content with ``{{char}}``/``{{user}}``,
expanded by the macro engine (``substitute``) — keys before matching, contents before the budget, each
once per call.

Then a recursion chain: N entries where entry i's content contains entry i+1's key and the chat mentions
entry 0's key, so every recursion step activates exactly one entry (N + 1 steps), cold and warm; with
plain keys and with bounded regex keys (``/linkNx?s\b/i``: cold includes compiling N regexes).

    .venv/bin/python bench/worldinfo.py [--runs N] [--chain N ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import string
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.macros.engine import MacroContext, expand
from apps.worldviews.engine import ActivationSettings, ChatLine, Entry, activate, clear_caches

ENTRIES = 5000
MESSAGES = 200


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 9)))


def build(seed: int = 7) -> tuple[list[Entry], list[ChatLine], list[str]]:
    rng = random.Random(seed)
    vocab = [_word(rng) for _ in range(6000)]  # lore words: keys and entry contents
    common = vocab[:400]  # lore words the chat mentions
    filler = [_word(rng) for _ in range(3000)]  # ordinary chat words, never keys
    entries: list[Entry] = []
    for uid in range(ENTRIES):
        roll = rng.random()
        if roll < 0.10:
            keys: tuple[str, ...] = (f"/{rng.choice(vocab)}(?:s|es)?\\b/i",)
        elif roll < 0.25:
            keys = (f"{rng.choice(vocab)} {rng.choice(vocab)}", rng.choice(vocab))
        else:
            keys = tuple(rng.choice(vocab) for _ in range(rng.randint(1, 3)))
        content = " ".join(
            rng.choice(vocab) if rng.random() < 0.03 else rng.choice(filler) for _ in range(rng.randint(20, 60))
        )
        entries.append(
            Entry(
                uid=uid,
                key=keys,
                keysecondary=(rng.choice(common),) if rng.random() < 0.15 else (),
                selective_logic=rng.choice([0, 1, 2, 3]),
                content=content,
                constant=rng.random() < 0.004,
                order=rng.randint(1, 200),
                position=rng.choice([0, 1, 4, 7]),
                outlet_name="misc",
                group=f"g{rng.randint(0, 49)}" if rng.random() < 0.2 else "",
                group_weight=rng.randint(1, 100),
                probability=rng.choice([100, 100, 100, 50]),
                scan_depth=rng.choice([None] * 9 + [10]),
                source=rng.choice(["global", "character", "chat"]),
                lorebook_id=f"book{uid % 5}",
            )
        )
    chat = []
    for i in range(MESSAGES):
        words = [rng.choice(common) if rng.random() < 0.03 else rng.choice(filler) for _ in range(rng.randint(20, 80))]
        chat.append(ChatLine("Alice" if i % 2 == 0 else "Bob", " ".join(words), "user" if i % 2 == 0 else "assistant"))
    return entries, chat, common


def with_macros(entries: list[Entry], seed: int = 11) -> list[Entry]:
    """10 % of the entries get a ``{{char}}`` key besides their own, 30 % ``{{char}}``/``{{user}}`` in
    their content."""
    rng = random.Random(seed)
    out = []
    for entry in entries:
        key, content = entry.key, entry.content
        if rng.random() < 0.10 and not key[0].startswith("/"):
            key = (*key, "{{char}}'s " + key[0])
        if rng.random() < 0.30:
            content = "{{char}} tells {{user}}: " + content
        out.append(dataclasses.replace(entry, key=key, content=content))
    return out


def bench_macros(entries: list[Entry], chat: list[ChatLine], next_turn: list[ChatLine], runs: int) -> None:
    entries = with_macros(entries)
    settings = ActivationSettings(recursive=True)

    def run(history: list[ChatLine]) -> object:
        ctx = MacroContext(user="Alice", char="Seraphina")  # one context per turn, as a roleplay turn
        return activate(
            entries,
            history,
            settings=settings,
            max_context=32000,
            rng=random.Random(1),
            substitute=lambda text: expand(text, ctx),
        )

    cold, warm, turn = [], [], []
    for _ in range(runs):
        clear_caches()
        cold.append(_time(lambda: run(chat)))
        warm.append(_time(lambda: run(chat)))
        turn.append(_time(lambda: run(next_turn)))
    result = run(chat)
    active = sum(1 for t in result.trace if t.status == "activated")
    print(
        f"macros, depth 2: cold {statistics.median(cold):6.1f} ms | warm {statistics.median(warm):5.1f} ms"
        f" | next turn {statistics.median(turn):5.1f} ms | activated {active}, steps {result.steps},"
        f" budget {result.budget_used}/{result.budget_limit}"
    )


def build_chain(size: int, regex: bool = False) -> tuple[list[Entry], list[ChatLine]]:
    """A recursion chain: entry i's content mentions entry i+1's key."""
    keys = [f"link{i}x" for i in range(size + 1)]
    entries = [
        Entry(
            uid=i,
            key=(f"/{keys[i]}s?\\b/i" if regex else keys[i],),
            content=f"Entry {i} leads on to {keys[i + 1]}.",
            lorebook_id="chain",
        )
        for i in range(size)
    ]
    return entries, [ChatLine("Alice", f"Tell me about {keys[0]}.")]


def bench_chain(size: int, runs: int, regex: bool = False) -> None:
    entries, chat = build_chain(size, regex)
    settings = ActivationSettings(recursive=True)

    def run() -> object:
        return activate(entries, chat, settings=settings, max_context=10**8, rng=random.Random(1))

    cold, warm = [], []
    for _ in range(runs):
        clear_caches()
        cold.append(_time(run))
        warm.append(_time(run))
    result = run()
    label = "regex chain" if regex else "chain"
    print(
        f"{label:>11} {size:>5}: cold {statistics.median(cold):7.1f} ms | warm {statistics.median(warm):7.1f} ms"
        f" | activated {len(result.activated)}, steps {result.steps}"
    )


def _time(fn) -> float:
    """CPU time of ``fn`` in ms (process time: robust on a shared machine; single-threaded code)."""
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--chain", type=int, nargs="*", default=[500, 1000, 2000, 5000])
    parser.add_argument("--regex-chain", type=int, nargs="*", default=[1000, 5000])
    parser.add_argument("--macros", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    entries, chat, common = build()
    rng = random.Random(3)
    next_turn = [*chat, ChatLine("Alice", " ".join(common[:30])), ChatLine("Bob", " ".join(common[30:60]))]
    for depth in (2, 200):
        settings = ActivationSettings(scan_depth=depth, recursive=True)

        def run(history: list[ChatLine], settings: ActivationSettings = settings) -> object:
            return activate(entries, history, settings=settings, max_context=32000, rng=random.Random(1))

        def run_fresh(settings: ActivationSettings = settings) -> object:
            fresh = [dataclasses.replace(e) for e in entries]
            return _time(lambda: activate(fresh, chat, settings=settings, max_context=32000, rng=random.Random(1)))

        def run_edited(settings: ActivationSettings = settings) -> float:
            edited = list(entries)
            edited[17] = dataclasses.replace(edited[17], content=edited[17].content + " (edited)")
            return _time(lambda: activate(edited, chat, settings=settings, max_context=32000, rng=random.Random(1)))

        def run_rebuilt_edited(settings: ActivationSettings = settings) -> float:
            rebuilt = [dataclasses.replace(e) for e in entries]
            rebuilt[17] = dataclasses.replace(rebuilt[17], content=rebuilt[17].content + " (edited again)")
            return _time(lambda: activate(rebuilt, chat, settings=settings, max_context=32000, rng=random.Random(1)))

        cold, warm, fresh, edit, rebuilt, turn = [], [], [], [], [], []
        for _ in range(args.runs):
            clear_caches()
            cold.append(_time(lambda: run(chat)))
            warm.append(_time(lambda: run(chat)))
            fresh.append(run_fresh())
            edit.append(run_edited())
            run(chat)  # back to the original set before the rebuilt-and-edited one
            rebuilt.append(run_rebuilt_edited())
            turn.append(_time(lambda: run(next_turn)))
        result = run(chat)
        active = sum(1 for t in result.trace if t.status == "activated")
        print(
            f"scan depth {depth:>3}: cold {statistics.median(cold):6.1f} ms | warm {statistics.median(warm):5.1f} ms"
            f" | equal new objects {statistics.median(fresh):5.1f} ms"
            f" | one entry edited {statistics.median(edit):5.1f} ms"
            f" | rebuilt + edited {statistics.median(rebuilt):5.1f} ms"
            f" | next turn {statistics.median(turn):5.1f} ms"
            f" | activated {active}, steps {result.steps},"
            f" budget {result.budget_used}/{result.budget_limit}"
        )
    del rng
    if args.macros:
        bench_macros(entries, chat, next_turn, args.runs)
    for size in args.chain:
        bench_chain(size, max(1, min(args.runs, 5)))
    for size in args.regex_chain:
        bench_chain(size, max(1, min(args.runs, 3)), regex=True)


if __name__ == "__main__":
    main()
