"""Serializer helpers shared by the apps."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict


class StaticFieldsMixin:
    """Build a serializer's fields once per class instead of once per instance.

    DRF deep-copies every declared field for each serializer instance (≈ 1 ms for a request body with
    a nested list). For input serializers whose fields depend on nothing but the class — no context,
    no `partial`, no per-instance field changes — one bound set serves every instance: validating
    reads the fields and never changes them.
    """

    _static_fields: BindingDict | None = None

    @property
    def fields(self) -> BindingDict:  # type: ignore[override]
        cls = type(self)
        cached = cls.__dict__.get("_static_fields")
        if cached is None:
            cached = BindingDict(self)  # type: ignore[arg-type]  # a mixin of Serializer
            for name, field in self.get_fields().items():  # type: ignore[attr-defined]
                cached[name] = field
            cls._static_fields = cached
        return cached


class StaticSerializer(StaticFieldsMixin, serializers.Serializer):
    """A `Serializer` with class-level fields (see `StaticFieldsMixin`); for request bodies."""
