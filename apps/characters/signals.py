"""Signals of the characters app."""

from django.dispatch import Signal

card_received = Signal()
"""Sent by the services before a card from a request or a file is stored, with ``card`` (the V3 card)
and ``path`` (where its fields sit in the request: ``"card."`` over REST, ``""`` for a file). A
receiver refuses the card by raising an ``ApplicationError`` (a 400 ``InvalidInput``): the world-info
app, a higher layer that this one cannot import, checks the regex keys of the embedded
``character_book`` this way."""
