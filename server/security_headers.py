"""Headers on every answer that keep the pages' origin to itself: a Content-Security-Policy (scripts, styles,
images and requests from this origin only; no plugins, no framing by other sites), ``nosniff`` and no Referer (a
``/view?stream=`` address stays on this origin). A route that sets its own policy keeps it (``/docs``)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGES_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
             "media-src 'self' blob: mediastream:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; "
             "form-action 'self'; frame-ancestors 'self'")
HEADERS = ((b"content-security-policy", PAGES_CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"))


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in HEADERS if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, with_headers)
