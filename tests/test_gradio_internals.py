"""Canaries for the one module that reads Gradio's private parts: each fails on a Gradio upgrade that changes what
mnist_demo.gradio_internals relies on, so that no upgrade can break the app silently."""

import inspect

import gradio as gr
from gradio.routes import App

from mnist_demo import gradio_internals


def test_the_gradio_version_is_the_one_the_module_was_written_for():
    assert gradio_internals.version_ok(), f"gradio {gr.__version__}: recheck mnist_demo/gradio_internals.py"


def test_the_sketchpads_blob_store_is_still_the_server_function_we_replace():
    ours = gradio_internals.Sketchpad.accept_blobs
    assert getattr(gr.Sketchpad.accept_blobs, "_is_server_fn", False) and ours._is_server_fn
    assert "accept_blobs" in [f.__name__ for f in gradio_internals.Sketchpad().server_fns]


def test_the_login_check_reads_what_gradios_own_check_reads():
    source = inspect.getsource(App.create_app)
    for name in ("app.auth", "app.auth_dependency", "access-token-{app.cookie_id}",
                 "access-token-unsecure-{app.cookie_id}", "app.tokens.get(token)"):
        assert name in source, f"Gradio's login check no longer uses {name}"


def test_our_sketchpad_is_drawn_by_gradios_own_image_editor_frontend():
    ours, theirs = gradio_internals.Sketchpad(), gr.Sketchpad()
    assert ours.get_block_name() == theirs.get_block_name() and ours.get_block_class() == theirs.get_block_class()
