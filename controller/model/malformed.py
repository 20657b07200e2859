"""The error of outside input that Spot Guard cannot read: which object, which field, and what was expected.

Outside input is whatever Spot Guard did not check itself before it was stored: annotations (nodewatch's, and
the records Spot Guard wrote that someone may have edited), SpotGuardFallbackEvents, settings. A parser of such
input raises this error (or, for Node annotations, ``nodewatch.annotations.MalformedAnnotationError``, which
carries the same ``kind``, ``name`` and ``field``) and nothing else, so a caller contains it to that object.
"""

from __future__ import annotations


class MalformedObjectError(ValueError):
    """One object cannot be read. ``kind`` and ``name`` say which object (``name`` is "" when the parser was not
    told), ``field`` which part of it (a JSON path such as ``spec.minimumWaitDuration``)."""

    def __init__(self, message: str, *, kind: str = "", name: str = "", field: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.field = field
