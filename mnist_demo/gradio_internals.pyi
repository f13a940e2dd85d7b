"""The one place that reads Gradio's private attributes, for what its public API does not offer yet; each use is
named here, checked against the Gradio version it was written for, and covered by a canary test
(tests/test_gradio_internals.py) that fails on an upgrade that changes it."""

from __future__ import annotations

import inspect

import gradio as gr
from gradio.components.base import server

WRITTEN_FOR = "6.31.0"


def version_ok() -> bool:
    return gr.__version__ == WRITTEN_FOR


def logged_in(request) -> bool:
    """Whether a request to one of the app's own routes carries the login of Gradio's `auth=` (always true when the
    app has none). Gradio checks its own routes with a private dependency; there is no public function for it."""
    app = request.app
    if getattr(app, "auth", None) is None and getattr(app, "auth_dependency", None) is None:
        return True
    if app.auth_dependency is not None:
        user = app.auth_dependency(request)
        return user is not None and not inspect.isawaitable(user)
    token = (request.cookies.get(f"access-token-{app.cookie_id}")
             or request.cookies.get(f"access-token-unsecure-{app.cookie_id}"))
    return token is not None and token in app.tokens

from gradio.events import Dependency

class Sketchpad(gr.Sketchpad):
    """Gradio's Sketchpad, except that the server never keeps a stroke's images. The page sends each stroke to the
    app's own route instead (assets/app.js), so nothing would read them; and Gradio's own `accept_blobs` keeps every
    stroke until an event reads it and trusts the layer index a request names (it allocates a list that long)."""

    @server
    def accept_blobs(self, data) -> None:
        return None

    def get_block_name(self) -> str:
        """The frontend to use: the image editor's, as for Gradio's own Sketchpad (Gradio's documented override)."""
        return gr.ImageEditor.__name__.lower()

    get_block_class = get_block_name
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component