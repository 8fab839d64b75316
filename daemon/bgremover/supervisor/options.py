"""What a session asks for: its options from the settings and its job ticket, and its model.

Read by every part that needs a session's format, its masks or its model, so
that each rule is written once.
"""

from __future__ import annotations

from bgremover.intake.tickets import makes_masks, session_options
from bgremover.models.manifest import ModelSpec, find_model_spec
from bgremover.queue.store import Session
from bgremover.settings import Settings


class SessionOptions:
    def __init__(self, settings: Settings, model: ModelSpec) -> None:
        self.settings = settings
        self.models: dict[str, ModelSpec] = {model.name: model}  # the entries whose files were verified

    def options_for(self, ticket: dict | None) -> dict:
        return session_options(self.settings, ticket)

    def format_for(self, ticket: dict) -> str:
        """A session's file format: a mask alone is always a PNG (a matte must be lossless)."""
        options = self.options_for(ticket)
        return "png" if options["output"] == "mask" else options["output_format"]

    def output_for(self, ticket: dict | None) -> str:
        return self.options_for(ticket)["output"]

    def output_of(self, session: Session) -> str:
        """cutout, mask or both: as stored when it opened (older sessions: as the settings say now)."""
        return session.output or self.output_for(session.ticket)

    def with_masks(self, session: Session) -> bool:
        return makes_masks(self.settings, session.ticket, session.output)

    def model_named(self, name: str) -> ModelSpec:
        """The model by its manifest name as the manifests say now; its checksum verified whenever its entry changes.

        Read afresh for every session and item (two small files), so a model
        removed with `bgremover models remove` stops being used at once, and
        one fetched meanwhile is found without a restart.
        """
        spec = find_model_spec(name, self.settings.models_folder, verify=False)
        if self.models.get(name) != spec:
            self.models[name] = find_model_spec(name, self.settings.models_folder)
        return self.models[name]

    def model_of(self, session: Session, own: dict | None = None) -> ModelSpec:
        """The model that cuts this session's images, or the one a review gave an item (`own`: its options).

        Raises ModelError if it cannot be used.
        """
        return self.model_named((own or {}).get("model") or self.options_for(session.ticket)["model"])
