"""What every model kind's serving object shares: the document it serves, the one before it, and
a hot-swap that validates a whole newer document before anything changes.

A kind subclasses :class:`Served` with `build` (validate the document and load its estimators,
raising Rejected or DocumentError on anything wrong) and `adopt` (serve what `build` returned);
`load` does the rest the same way for every kind: versions only move forward, the previous
document is kept (GET /clusters, the dashboard), and the kind's version gauge follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.monitoring import MODEL_VERSION
from streams.records import document_version


@dataclass(kw_only=True)
class Served:
    """A model kind's serving document and the one before it (None: none yet)."""

    document: dict[str, Any] | None = None
    previous: dict[str, Any] | None = None

    @property
    def model_name(self) -> str:
        """The kind's key on `models` (its version gauge's label)."""
        raise NotImplementedError

    @property
    def version(self) -> int:
        return int(self.document["version"]) if self.document else 0

    def build(self, document: dict[str, Any], version: int) -> Any:
        """What `document` (of `version`) serves, validated; raises on anything wrong."""
        raise NotImplementedError

    def adopt(self, built: Any, document: dict[str, Any]) -> None:
        """Serve what `build` returned for `document`, once it is `self.document` (nothing
        here may fail)."""
        raise NotImplementedError

    def kept(self, document: dict[str, Any]) -> dict[str, Any]:
        """What of a served document stays in memory as `document` (and later `previous`)."""
        return document

    def load(self, document: dict[str, Any]) -> bool:
        """Hot-swap to `document` if it is newer; True when it was. Raises Rejected or
        DocumentError, and the serving version stays, on anything wrong."""
        version = document_version(document)
        if version <= self.version:
            return False
        built = self.build(document, version)
        self.previous, self.document = self.document, self.kept(document)
        self.adopt(built, document)
        MODEL_VERSION.labels(model=self.model_name).set(version)
        return True
