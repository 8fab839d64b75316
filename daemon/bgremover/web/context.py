"""What every request handler shares: the settings, the guard, the reader, the pictures, the templates."""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from bgremover.intake.watcher import IMAGE_EXTENSIONS
from bgremover.queue.spool import Spool
from bgremover.settings import Settings
from bgremover.web.forms import FILES_LIMIT, Limits
from bgremover.web.reading import Reader
from bgremover.web.security import Guard
from bgremover.web.thumbnails import Thumbnails
from bgremover.web.uploads import accepted_extensions


@dataclass
class Web:
    settings: Settings
    guard: Guard
    reader: Reader
    thumbnails: Thumbnails
    env: Environment
    limits: Limits
    spool: Spool

    def common(self) -> dict:
        """What every template is given."""
        return {
            "csrf": self.guard.csrf_token,
            "limits": self.limits,
            "files_limit": FILES_LIMIT,
            "extensions": ",".join(sorted(IMAGE_EXTENSIONS)),
            "extensions_text": accepted_extensions(),
        }

    def message(
        self, request: Request, status: int, title: str, message: str, login: bool = False, **extra
    ) -> Response:
        """One sentence, as JSON for the page's script (with `extra` fields) and as a small page without it."""
        if wants_json(request):
            key = "message" if status < 400 else "error"
            return JSONResponse({key: message, **extra}, status)
        html = self.env.get_template("message.html").render(
            title=title, message=message, login=login, failed=status >= 400
        )
        return HTMLResponse(html, status)


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")
