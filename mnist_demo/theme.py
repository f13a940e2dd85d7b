"""The app page's look and feel: a theme with AA contrast, its CSS, and the script that readies the sketchpad."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"


def theme():
    """Gradio's Soft theme in indigo, with text and button colours darkened to pass WCAG AA (4.5:1)."""
    import gradio as gr  # only the web app needs Gradio; the CLI and the library never import this module

    # The system's own fonts: Soft's web fonts cost a first visit ~240 KB and say nothing a digit needs.
    system = [gr.themes.Font("ui-sans-serif"), gr.themes.Font("system-ui"), gr.themes.Font("sans-serif")]
    mono = [gr.themes.Font("ui-monospace"), gr.themes.Font("monospace")]
    return gr.themes.Soft(primary_hue="indigo", font=system, font_mono=mono).set(
        block_label_text_color="*neutral_700", block_title_text_color="*neutral_800",
        body_text_color_subdued="*neutral_600",
        button_primary_background_fill="*primary_700", button_primary_background_fill_hover="*primary_800",
        button_primary_text_color="white", button_cancel_background_fill="#b91c1c",
        button_cancel_background_fill_hover="#991b1b", button_cancel_text_color="white",
        checkbox_label_background_fill_selected="*primary_700", checkbox_label_text_color_selected="white")


def compression() -> dict:
    """Gradio's page and scripts, compressed on the way out (a first visit drops from ~1.1 MB); event streams are
    left as they are by the middleware, so live updates still arrive at once."""
    from starlette.middleware import Middleware
    from starlette.middleware.gzip import GZipMiddleware

    return {"middleware": [Middleware(GZipMiddleware, minimum_size=1024)]}


def css() -> str:
    return (ASSETS / "app.css").read_text()


def page_script() -> str:
    return (ASSETS / "app.js").read_text()
