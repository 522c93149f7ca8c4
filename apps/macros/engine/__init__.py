"""SillyTavern-compatible macro engine (pure Python, no Django).

>>> expand("Hello {{user}}!", MacroContext(user="Alice"))
'Hello Alice!'

See ``docs/macros.md`` for the supported macros, syntax, limits and decisions.
"""

from apps.macros.engine import builtins as _builtins  # noqa: F401 (registers the built-in macros)
from apps.macros.engine.context import MacroBudget, MacroContext
from apps.macros.engine.evaluator import expand, needs_expansion
from apps.macros.engine.variables import CappedStore

__all__ = ["CappedStore", "MacroBudget", "MacroContext", "expand", "needs_expansion"]
