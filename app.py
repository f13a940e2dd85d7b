"""Gradio app: the Draw, Train and Models tabs, as layout and event wiring over the mnist_demo library."""

import asyncio
import copy
import functools
import html
import inspect
import os
from pathlib import Path

# Gradio recomputes a pandas summary of its last 10,000 events after every event, for its monitoring page; at 50-80
# classify calls a second that cost more server CPU than the model itself. Once every 100 events is plenty.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "100")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from mnist_demo import api, examples, figures, sessions, theme  # noqa: E402
from mnist_demo.catalogue import Catalogue  # noqa: E402
from mnist_demo.data import CLASS_NAMES, dataset_title, offline_datasets  # noqa: E402
from mnist_demo.errors import BLANK_CANVAS, message  # noqa: E402
from mnist_demo.gradio_internals import Sketchpad, logged_in  # noqa: E402
from mnist_demo.inside import look_inside  # noqa: E402
from mnist_demo.live_run import LiveRun  # noqa: E402
from mnist_demo.preprocess import Prepared, pack, prepare, unpack  # noqa: E402
from mnist_demo.queue_eta import FirstRunEta  # noqa: E402
from mnist_demo.train import OPTIMIZERS, TrainConfig, available_devices  # noqa: E402
from mnist_demo.trainers import Trainers, device_key  # noqa: E402
from mnist_demo.visitors import examples_folder, owner_of  # noqa: E402

CANVAS = 280  # drawing surface in pixels: 10× MNIST, so the brush maps to MNIST-like strokes
BRUSH_RADIUS = 11  # a 22 px stroke is ~2.2 px once the digit is fitted into MNIST's 20 px box
RECIPE_FIELDS = ["optimizer", "lr", "batch_size", "epochs", "augment"]
ARCHITECTURES = {a["name"]: a for a in api.list_architectures()}  # built once: counting parameters builds each model
INSIDE_EMPTY = "<p>Draw a digit (or upload one) to see what happens inside the model.</p>"
PICTURES = {"seen": "The 28×28 picture the model read", "saliency": "The pixels that drove the decision, in red"}
QUEUE_NEWS_S = 1.0
QUEUE_MAX = 128  # events waiting at once, everyone's together
AUTH_ENV = "MNIST_DEMO_AUTH"  # user:password turns on Gradio's login for the whole app
QUEUE_POLL_S = 0.01  # Gradio's queue looks for work every 1 ms when idle: ~6% of a core spent waiting

catalogue = Catalogue()
trainers = Trainers()
queue_eta = FirstRunEta()
ui: dict = {}  # every component by name, so that handlers can return {component: value}


def out(**values) -> dict:
    """A handler's update, by component name."""
    return {ui[name]: value for name, value in values.items()}


def session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def owner(request: gr.Request | None) -> str | None:
    """The visitor's folder name: their models are listed, used and downloaded only in their own session."""
    return owner_of(getattr(request, "session_hash", None))


def read(file) -> str | None:
    """The path of a file that Gradio handed over untouched (preprocess=False)."""
    return file.get("path") if isinstance(file, dict) else file


# Draw tab

DRAWING = "Your drawing"


def packed(prepared: Prepared, source: str) -> dict:
    """An input as the page keeps it (`drawing`) for the events that follow: the correction, a model change, the
    slower views and the next training's live view."""
    return {**pack(prepared), "source": source}


def unpacked(drawing: dict | None) -> tuple[Prepared, str]:
    """The page's copy of the last input, or a blank canvas; a damaged copy raises ImageError."""
    return unpack(drawing), str((drawing or {}).get("source") or DRAWING)[:40]


def answer_only(verdict: str, **others) -> dict:
    """A verdict with no probabilities or pictures: a blank canvas, or a message about the input."""
    return out(verdict=verdict, probs=None, seen=None, **others)


def inline(views: dict) -> dict:
    """The pictures of a stroke inside the page, rather than as files the page then fetches (~6 ms each)."""
    for key, alt in PICTURES.items():
        if isinstance(views.get(ui[key]), np.ndarray):
            views[ui[key]] = figures.inline_image(views[ui[key]], alt)
    return views


def answer_view(prepared: Prepared, source: str, model: str | None, visitor: str | None) -> dict:
    """What Draw shows first for an input, inline: the probabilities, the verdict and the 28×28 the model saw."""
    return inline(answer_pictures(prepared, source, model, visitor))


def answer_pictures(prepared: Prepared, source: str, model: str | None, visitor: str | None) -> dict:
    """The answer, with the model's input as an image array; the model reads the pixels the page keeps."""
    drawing = packed(prepared, source)
    prepared = unpack(drawing)
    try:
        _, clf = catalogue.classifier(model, catalogue.entries(visitor, digits=True))
    except Exception as exc:  # a missing or broken model: said in the verdict, the tab keeps working
        return answer_only(f"⚠️ {message(exc, 'loading the model')}", drawing=drawing)
    if prepared.blank:
        return answer_only(prepared.message or BLANK_CANVAS, drawing=drawing)
    pred = clf.predict(prepared)
    return out(probs=figures.probabilities(pred.probabilities, clf.classes),
               verdict=f"{source}: " + figures.verdict(pred.probabilities, clf.classes, pred.message),
               seen=figures.digit_image(pred.digit), drawing=drawing)


def extras_view(drawing: dict | None, model: str | None, compare_shown: bool, inside_shown: bool,
                visitor: str | None) -> dict:
    """The slower views, after the answer: what drove it, and (only while shown) every model's answer and the
    layers inside the selected model."""
    return inline(extras_pictures(drawing, model, compare_shown, inside_shown, visitor))


def extras_pictures(drawing: dict | None, model: str | None, compare_shown: bool, inside_shown: bool,
                    visitor: str | None) -> dict:
    """The slower views, with the saliency overlay as an image array."""
    entries = catalogue.entries(visitor, digits=True)  # the checkpoint folders, read once per stroke
    try:
        prepared = unpack(drawing)
        entry, clf = catalogue.classifier(model, entries)
    except Exception:  # the verdict already says why
        return out(saliency=None, compare=None, inside_view=INSIDE_EMPTY)
    saliency = None
    if not prepared.blank:
        pred = clf.predict(prepared)
        saliency = figures.saliency_overlay(pred.digit, clf.saliency(pred.digit, pred.label))
    return out(saliency=saliency,
               compare=figures.comparison(catalogue.answers(prepared, entries), entry.key) if compare_shown
               else gr.skip(),
               inside_view=inside_view(prepared, clf) if inside_shown else gr.skip())


def inside_view(prepared: Prepared, clf) -> str:
    """Look inside: the selected model's layers and weights for the last input."""
    if prepared.blank:
        return INSIDE_EMPTY
    try:
        # A private copy: the hooks that read its layers would also see other requests' passes on the shared model.
        pictures = look_inside(copy.deepcopy(clf.model), clf.tensor(prepared.digit), clf.classes)
    except Exception as exc:
        return f"<p>⚠️ {html.escape(message(exc, 'looking inside the model'))}</p>"
    return figures.pictures_html(pictures)


def stroke_pictures(sketch: dict | None, model: str | None, visitor: str | None) -> dict:
    """A stroke (or a clear) on the canvas: the answer, its pictures as arrays."""
    try:
        prepared = prepare(sketch)
    except Exception as exc:
        return answer_only(f"⚠️ {message(exc, 'reading the drawing')}", drawing=None)
    return answer_pictures(prepared, DRAWING, model, visitor)


def stroke(sketch: dict | None, model: str | None, visitor: str | None) -> dict:
    """A stroke as the page shows it: the answer, inline; the slower views follow in their own event."""
    return inline(stroke_pictures(sketch, model, visitor))


def sketch_files(sketch) -> dict | None:
    """A Sketchpad value as Gradio hands it over untouched: its images' paths, none of them decoded yet (each is
    checked from its header first, in preprocess)."""
    if not isinstance(sketch, dict):
        return None
    layers = sketch.get("layers")
    return {"layers": [read(layer) for layer in layers[:4]] if isinstance(layers, list) else [],
            **{key: read(sketch.get(key)) for key in ("composite", "background")}}


def draw(sketch: dict | None, model: str | None = None, request: gr.Request = None) -> tuple:
    """API: a Sketchpad value → probabilities, verdict, model input, saliency overlay and all models' answers."""
    visitor = owner(request)
    views = stroke_pictures(sketch_files(sketch), model, visitor)
    views.update(extras_pictures(views[ui["drawing"]], model, compare_shown=True, inside_shown=False,
                                 visitor=visitor))
    return tuple(views.get(ui[k]) for k in ("probs", "verdict", "seen", "saliency", "compare"))


STROKE_PATH, VIEWS_PATH = "/mnist_demo/stroke", "/mnist_demo/views"
STROKE_MAX_BYTES = 2_000_000  # a canvas's two PNGs are 5-60 KB
VIEWS_MAX_BYTES = 20_000  # a packed drawing is ~1 KB
ANSWER, VIEWS = ("probs", "verdict", "seen", "drawing"), ("saliency", "compare", "inside_view")
# One view at a time across all tabs, so that under a class's load they never take the cores from the answers
# (and from a training); each tab asks only for its newest stroke's views (assets/app.js).
VIEWS_TURN = asyncio.Semaphore(1)
VIEWS_ASKED: set[str | None] = set()  # visitors with views on their way: one each, so no one holds up the rest


async def stroke_route(request: Request) -> JSONResponse:
    """A stroke's answer for the page (assets/app.js): the canvas's images and the model's name in, the values of
    the answer's components out. Not a Gradio event: one request and ~7.5 ms of server CPU, where the sketchpad's
    own change event cost ~22 ms in 4-6 requests (three images sent ahead, new files uploaded, the event)."""
    if not logged_in(request):
        return JSONResponse({"error": "Not authenticated"}, status_code=401)
    size = request.headers.get("content-length") or ""
    if not size.isdigit() or int(size) > STROKE_MAX_BYTES:
        views = answer_only(f"⚠️ The drawing could not be sent: it must be under {STROKE_MAX_BYTES // 1_000_000} MB.",
                            drawing=None)
        return JSONResponse(page_values(views, ANSWER))
    try:
        async with request.form(max_files=2, max_fields=2) as form:
            images = {k: await form[k].read() for k in ("layer", "composite") if hasattr(form.get(k), "read")}
            model, visitor = form.get("model"), form.get("visitor")
    except Exception:  # not a form, or more in it than a stroke sends
        return JSONResponse(page_values(answer_only("⚠️ The drawing arrived damaged; draw it again.", drawing=None),
                                        ANSWER))
    sketch = {"layers": [images["layer"]] if "layer" in images else [], "composite": images.get("composite")}
    views = await run_in_threadpool(stroke, sketch, text(model), text(visitor))
    return JSONResponse(page_values(views, ANSWER))


async def views_route(request: Request) -> JSONResponse:
    """The slower views for the page (assets/app.js): the kept drawing, the model's name and which panels are open
    in; saliency, every model's answer and Look inside (those two only while open) out. Not a Gradio event either:
    ~9 ms of server CPU where the queued event cost ~19 ms, its queue and event stream included."""
    if not logged_in(request):
        return JSONResponse({"error": "Not authenticated"}, status_code=401)
    size = request.headers.get("content-length") or ""
    try:
        if not size.isdigit() or int(size) > VIEWS_MAX_BYTES:
            raise ValueError("too large")
        asked = await request.json()
        drawing, model, visitor = asked.get("drawing"), asked.get("model"), asked.get("visitor")
        shown = bool(asked.get("compare")), bool(asked.get("inside"))
    except Exception:  # not what the page sends: nothing to show
        drawing, model, visitor, shown = None, None, None, (False, False)
    visitor = text(visitor)
    if visitor in VIEWS_ASKED:  # a page asks one at a time (assets/app.js): more at once is not the page
        return JSONResponse(page_values(out(**dict.fromkeys(VIEWS, gr.skip())), VIEWS))
    VIEWS_ASKED.add(visitor)
    try:
        async with VIEWS_TURN:
            views = await run_in_threadpool(extras_view, drawing, text(model), *shown, visitor)
    finally:
        VIEWS_ASKED.discard(visitor)
    return JSONResponse(page_values(views, VIEWS))


def text(value) -> str | None:
    """A short string from the page, or None."""
    return value[:200] if isinstance(value, str) else None


def page_values(views: dict, names: tuple[str, ...]) -> list:
    """Views as the page's components take them (what Gradio's own events would send); skipped ones stay as
    they are."""
    values = []
    for name in names:
        value = views[ui[name]]
        if not (isinstance(value, dict) and value == gr.skip()):
            value = ui[name].postprocess(value)
        values.append(value.model_dump() if hasattr(value, "model_dump") else value)
    return values


def on_upload(image: dict | None, model: str | None, request: gr.Request = None) -> dict:
    if not image:
        return answer_only(BLANK_CANVAS, drawing=None)
    try:
        prepared = prepare(read(image))
    except Exception as exc:  # the broken thumbnail goes too, so nothing on screen contradicts the message
        return answer_only(f"⚠️ {message(exc, 'reading the image')}", upload=None, drawing=None)
    return answer_view(prepared, "The uploaded image", model, owner(request))


def on_model_change(drawing: dict | None, model: str | None, request: gr.Request = None) -> dict:
    try:
        return answer_view(*unpacked(drawing), model, owner(request))
    except Exception as exc:
        return answer_only(f"⚠️ {message(exc, 'reading the drawing')}", drawing=None)


def classify(image: dict | None, model: str | None = "", request: gr.Request = None) -> dict[str, float] | None:
    """API: an image file → {class: probability}; a blank image → empty."""
    if not image:
        return None
    try:
        _, clf = catalogue.classifier(model or None, catalogue.entries(owner(request)))
        pred = clf.predict(read(image))
    except Exception as exc:
        raise gr.Error(message(exc, "classifying")) from None
    return figures.probabilities(pred.probabilities, clf.classes)


def model_dropdown(current: str | None = None, visitor: str | None = None, **layout) -> gr.Dropdown:
    """Draw's model picker with every digit model the visitor may use now, keeping the current choice if it still
    exists."""
    entries = catalogue.entries(visitor, digits=True)
    value = current if current in {e.key for e in entries} else catalogue.default_key(entries)
    return gr.Dropdown([(e.label, e.key) for e in entries], value=value, **layout)


def model_picker(current: str | None, request: gr.Request = None) -> gr.Dropdown:
    return model_dropdown(current, owner(request))


# Teaching: the session's own examples, and a model taught them

DIGITS = CLASS_NAMES["mnist"]


def examples_view(ex, note: str, request: gr.Request | None, taught: dict | None = None) -> dict:
    """The examples gallery (after teaching: each one's answer before → after), its CSV and a note."""
    csv = None
    if len(ex):  # one file per visitor, in their own folder: it goes with them
        csv = str(examples.to_csv(ex, examples_folder(catalogue.runs_dir, owner(request)) / "my-digits.csv"))
    return out(examples=ex, examples_gallery=figures.examples_gallery(ex, DIGITS, taught), examples_csv=csv,
               teach_status=note, remove=gr.Button(interactive=False), selected=None)


def keep_example(drawing: dict | None, label: str | None, ex, request: gr.Request = None) -> dict:
    """"Wrong? It's a …": the 28×28 the model saw joins the examples with the right label; said where it was
    clicked, and in the teaching panel."""
    if label is None:
        return {}
    try:
        ex = examples.add(ex, unpack(drawing).digit, label, DIGITS)
    except Exception as exc:
        text = f"⚠️ Not kept: {message(exc, 'keeping the example')}"
        return out(teach_status=text, correct_note=text, correct=None)
    note = figures.examples_note(ex, DIGITS)
    return {**examples_view(ex, note, request), **out(correct=None, correct_note=f"✅ Kept as a **{label}**. {note}")}


def correct_api(image: dict | None, label: str, ex) -> tuple:
    """API: an image file and its right label join this session's examples; returns how many there are."""
    try:
        prepared = prepare(read(image))
        ex = examples.add(ex, prepared.digit, label, DIGITS)
    except Exception as exc:
        raise gr.Error(message(exc, "keeping the example")) from None
    return ex, figures.examples_note(ex, DIGITS)


def select_example(evt: gr.SelectData) -> dict:
    return out(selected=evt.index, remove=gr.Button(interactive=True))


def remove_example(ex, index: int | None, request: gr.Request = None) -> dict:
    if index is None:
        return {}
    ex = examples.remove(ex, index)
    return examples_view(ex, figures.examples_note(ex, DIGITS), request)


def upload_examples(file: dict | None, ex, request: gr.Request = None) -> dict:
    try:
        ex = examples.join(ex, examples.from_csv(read(file)))
    except Exception as exc:
        return out(teach_status=f"⚠️ {message(exc, 'reading the examples')}")
    return examples_view(ex, figures.examples_note(ex, DIGITS), request)


def teach(ex, model: str | None, name: str | None, request: gr.Request | None = None):
    """API: fine-tune the model on this session's examples (with replayed MNIST); streams progress, then the new
    model joins the picker as <model>+you (or the given name) and is selected."""
    visitor = owner(request)
    try:
        entry = catalogue.find(model or None, catalogue.entries(visitor, digits=True))
        name = catalogue.check_name((name or "").strip(), visitor) if (name or "").strip() else None
        progress = queue_eta.start("teach")
        for view in trainers.teach(entry.path, ex, session(request), name=name, progress=progress,
                                   folder=catalogue.visitors.folder(visitor)):
            yield out(teach_progress=view["progress"], teach_status=view["status"])
    except Exception as exc:
        trainers.sessions.forget(session(request))
        text = message(exc, "teaching")
        yield out(teach_status=f"⚠️ {text}", teach_progress="")
        raise gr.Error(text, visible=False) from None
    saved = view["saved"]
    if saved is None:
        yield out(teach_status=view["status"])
        return
    catalogue.visitors.prune(visitor)
    key = catalogue.key_of(saved["path"], visitor)
    yield {**examples_view(ex, figures.taught_note(saved, entry.key, key), request, saved["taught"]),
           **out(model=model_dropdown(key, visitor))}


# Train tab

def fill_recipe(arch: str, device: str = "auto") -> dict:
    """Choosing an architecture or a device loads its tuned recipe, so the defaults always train well."""
    cfg = TrainConfig.for_arch(arch, device=device)
    info = ARCHITECTURES.get(arch, {}).get("description", "")
    return out(**{name: getattr(cfg, name) for name in RECIPE_FIELDS}, arch_info=f"*{info}*",
               smoothing=figures.smoothing_note(cfg.label_smoothing))


def still_shown(result: dict | None) -> str:
    """Whose results the panel shows while another run goes on, fails, or is only a sanity check."""
    return f" The results below are still those of **{Path(result['path']).stem}**." if result else ""


ONE_RUN_EACH = ("You have a training or teaching waiting or going already: wait for it to end, or press Stop "
                "in the Train tab.")


def one_run_each(fn):
    """The validator of a training or teaching event (`fn`), which Gradio runs as the event asks to join the queue,
    before it does: a visitor has one run waiting or going at a time (reserved here, so that Stop works while it
    waits), so no one can fill the queue. It takes `fn`'s arguments, so that Gradio hands it the request too."""
    @functools.wraps(fn)  # its signature and annotations: Gradio finds where the request goes by them
    def validator(*args, **kwargs) -> list:
        values = [*args, *kwargs.values()]
        request = next((v for v in values if isinstance(v, gr.Request)), None)
        inputs = [v for v in values if not isinstance(v, gr.Request)]
        verdicts = [gr.validate(True, "") for _ in inputs]
        if not trainers.sessions.reserve(session(request)):
            verdicts[0] = gr.validate(False, ONE_RUN_EACH)
        return verdicts

    return validator


def not_busy(request: gr.Request = None) -> None:
    """A click on Train or Teach is told at once when the visitor has a run waiting or going already."""
    if trainers.sessions.busy(session(request)):
        raise gr.Error(ONE_RUN_EACH)


def teach_clicked(request: gr.Request = None) -> gr.Button:
    not_busy(request)
    return gr.Button(interactive=False)


def start_run(result: dict | None, drawing: dict | None, request: gr.Request = None) -> dict:
    """Runs before the (queued) training; Draw's last input goes with the run, for its live view."""
    not_busy(request)
    return out(status="Queued: waiting for the trainer (your place in the queue shows on the progress bar)…",
               train=gr.Button(interactive=False), overfit=gr.Button(interactive=False), last=drawing,
               headline="Training… this run's test results appear here when it ends." + still_shown(result))


def run(settings: dict, request: gr.Request | None, sanity: bool = False, last: dict | None = None):
    try:
        drawing = unpack(last).digit  # Draw's digit, if any: its probabilities show as the model learns
        cfg = api.run_config({**settings, "csv_file": read(settings["csv_file"])}, sanity)
        shown, progress = None, queue_eta.start(RUN_KINDS[sanity])
        for view in trainers.run(cfg, session(request), drawing=drawing, watch=True, progress=progress,
                                 folder=catalogue.visitors.folder(owner(request))):
            # The last real run's results stay in state until this run has results of its own; the grid of
            # watched digits is sent only when a new snapshot redrew it.
            grid = view["watch_grid"]
            view["watch_grid"], shown = (gr.skip() if grid is not None and grid is shown else grid), grid
            yield out(**{k: v for k, v in view.items() if v is not None or k != "result"})
    except Exception as exc:  # the message stays in the status line; gr.Error also tells API clients
        trainers.sessions.forget(session(request))
        text = message(exc, "training")
        yield out(status=f"⚠️ {text}", progress=LiveRun("", 0, detail="did not finish").progress_html())
        raise gr.Error(text, visible=False) from None  # for API clients: the page already shows it
    finally:  # a run stopped or dropped keeps its model too: it may take the place of the visitor's oldest
        catalogue.visitors.prune(owner(request))


def train_endpoint(sanity: bool, doc: str):
    """/train and /sanity_check take the same settings; None means "the architecture's recipe", as in the CLI."""
    def endpoint(dataset: str = "mnist", csv_file: str | None = None, arch: str = "cnn", device: str = "auto",
                 optimizer: str | None = None, lr: float | None = None, batch_size: float | None = None,
                 epochs: float | None = None, subset: float | None = 0, augment: bool = False,
                 seed: float | None = 0, last: dict | None = None, request: gr.Request = None):
        yield from run({k: v for k, v in locals().items() if k in SETTINGS}, request, sanity, last)

    endpoint.__doc__ = doc
    return endpoint


RUN_KINDS = {False: "train", True: "sanity_check"}  # a run's name in the API, by whether it is a sanity check
train = train_endpoint(False, "API: train a model; streams progress, ends with the checkpoint and its test accuracy.")
sanity_check = train_endpoint(True, "API: can these settings memorise a few images? If not: a bug or a bad lr.")
# In the API's order; `last` (Draw's last input when Train was clicked: a gr.State) is not part of it.
SETTINGS = [name for name in inspect.signature(train).parameters if name not in ("last", "request")]


NOTHING_TO_STOP = "Nothing to stop."


def stop(request: gr.Request = None) -> str:
    """API: end this session's run after the current step; the best model so far is kept."""
    stopping = trainers.sessions.stop(session(request))
    return "Stopping: keeping the best model so far…" if stopping else NOTHING_TO_STOP


def stop_clicked(status: str | None, request: gr.Request = None) -> str:
    """The Stop button: a run being stopped says so in its own stream (at once), so that an update already on its
    way cannot show "training" again after "stopping". With nothing to stop, what the status line said (the last
    run's result, or why it failed) stays above the answer."""
    if not trainers.sessions.stop(session(request)):
        said = (status or "").removesuffix(NOTHING_TO_STOP).strip()
        return f"{said}\n{NOTHING_TO_STOP}" if said else NOTHING_TO_STOP
    queued = not trainers.sessions.running(session(request))
    return "Stopping: this run ends as soon as it leaves the queue." if queued else gr.skip()


def show_results(summary: dict | None, result: dict | None, current_model: str | None,
                 request: gr.Request = None) -> dict:
    """After a run: its test metrics, mistakes and downloads (a sanity check has none), and refreshed model lists."""
    visitor = owner(request)
    lists = out(model=model_dropdown(current_model, visitor), models_table=models_table(request),
                pick=download_dropdown(result and catalogue.key_of(result["path"], visitor), visitor),
                train=gr.Button(interactive=True), overfit=gr.Button(interactive=True))
    if not result or not summary or "sanity_check" in summary:
        return {**lists, **out(headline="A sanity check trains on a few images only, so it has no test results: "
                                        "its outcome is in the status line above." + still_shown(result))}
    classes, named = result["classes"], result["classes"] != CLASS_NAMES["mnist"]
    return {**lists, **out(
        headline=f"### Test accuracy: {result['accuracy']:.2%} ({len(result['true']):,} test images, "
                 f"{result['errors']:,} mistakes)",
        per_class=gr.BarPlot(figures.per_class_errors(result["per_class_accuracy"], classes),
                             x_label_angle=-35 if named else 0),
        confusion=gr.Dataframe(figures.confusion_table(result["confusion"], classes), visible=True),
        gallery=gr.Gallery(figures.mistakes_gallery(result["mistakes"], classes), columns=5 if named else 8),
        ckpt_file=result["path"], show_table=gr.Button(visible=True), table=gr.Dataframe(visible=False))}


def run_failed(result: dict | None) -> dict:  # the buttons come back; the message stays in the status line
    return out(train=gr.Button(interactive=True), overfit=gr.Button(interactive=True),
               headline="This run did not finish (the status line says why)." + still_shown(result))


def prediction_table(result: dict | None) -> gr.Dataframe:
    """Loaded on request: 10,000 rows would otherwise delay every run's results by seconds."""
    table = result and figures.prediction_table(result["predicted"], result["true"], result["classes"])
    return gr.Dataframe(table, visible=bool(result))


# Models tab

def models_table(request: gr.Request = None):
    """API: the models this visitor can use (bundled, their own, shared, the server's), one row each."""
    return figures.models_table(catalogue.entries(owner(request)))


def download_dropdown(value: str | None = None, visitor: str | None = None) -> gr.Dropdown:
    entries = catalogue.entries(visitor)
    return gr.Dropdown([e.key for e in entries], value=catalogue.keep(value, entries))


def pick_dropdown(current: str | None, request: gr.Request = None) -> gr.Dropdown:
    return download_dropdown(current, owner(request))


def picked(key: str | None, request: gr.Request = None) -> dict:
    """The picked model's file to download; only the visitor's own can be shared."""
    entry = next((e for e in catalogue.entries(owner(request)) if e.key == key), None)
    return out(model_file=str(entry.path) if entry else None,
               share=gr.Button(interactive=entry is not None and entry.place == "mine"))


def refresh_on_load(current_model: str | None, current_pick: str | None, request: gr.Request = None) -> dict:
    visitor = owner(request)
    pick = catalogue.keep(current_pick, catalogue.entries(visitor))
    return {**out(model=model_dropdown(current_model, visitor), models_table=models_table(request),
                  pick=download_dropdown(pick, visitor), visitor=visitor, visitor_state=visitor),
            **picked(pick, request)}


def upload_checkpoint(file: dict | None, current_model: str | None, request: gr.Request = None) -> dict:
    """Accept a .safetensors checkpoint after loading it once (header, architecture and weights are checked)."""
    if not file:
        return out(upload_status="")
    visitor = owner(request)
    try:
        name = os.path.basename(str(file.get("orig_name") or read(file)))[-200:]
        entry = catalogue.add_upload(read(file), name, visitor)
    except Exception as exc:
        return out(upload_status=f"⚠️ Refused: {message(exc, 'adding the checkpoint')}")
    where = "the Draw tab's model picker" if entry.digits else "the list above (it reads no digits, so Draw omits it)"
    return out(upload_status=f"✅ Added **{entry.key}** ({entry.arch}) to your models; it is now in {where}.",
               models_table=models_table(request), pick=download_dropdown(entry.key, visitor),
               model=model_dropdown(current_model, visitor))


def share_model(key: str | None, request: gr.Request = None) -> dict:
    """API: share one of your models with everyone, under a name the app makes; returns what was done, in words."""
    visitor = owner(request)
    try:
        entry = catalogue.share(key, visitor)
    except Exception as exc:
        return out(share_status=f"⚠️ Not shared: {message(exc, 'sharing the model')}")
    return out(share_status=f"✅ Shared as **{entry.key}**: everyone can now draw on it and download it.",
               models_table=models_table(request), pick=download_dropdown(key, visitor))


def build_draw_tab() -> None:
    gr.Markdown("Draw a digit with your mouse or finger: the brush is ready. The answer updates after every "
                "stroke; the bin icon clears the canvas.", elem_id="draw-help")
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=300):
            ui["sketch"] = Sketchpad(
                label="Draw a digit", elem_id="sketch", type="numpy", image_mode="RGBA", canvas_size=(CANVAS, CANVAS),
                height=CANVAS + 120, layers=False, transforms=(), fixed_canvas=True,
                brush=gr.Brush(default_size=BRUSH_RADIUS, colors=["#000000"], color_mode="fixed"),
                eraser=gr.Eraser(default_size=2 * BRUSH_RADIUS))
        with gr.Column(scale=4, min_width=260):
            ui["verdict"] = gr.Markdown(BLANK_CANVAS, elem_id="verdict")
            ui["probs"] = gr.Label(num_top_classes=10, label="Probabilities", elem_id="probs")
            ui["correct"] = gr.Radio(DIGITS, label="Wrong? It's a… (keeps this drawing as an example to teach)",
                                     elem_id="correct")
            ui["correct_note"] = gr.Markdown(elem_id="correct-note")
        with gr.Column(scale=3, min_width=200):
            shown = dict(show_label=True, container=True, min_height=260)
            ui["seen"] = gr.HTML(label="What the model sees (28×28)", elem_id="seen", **shown)
            ui["saliency"] = gr.HTML(label="Pixels that drove the decision", elem_id="saliency", **shown)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            # API clients name models trained after the page (and its choices) loaded.
            ui["model"] = model_dropdown(label="Model", elem_id="model", allow_custom_value=True)
            # Closed at first: answering with every model costs a stroke more than everything else together.
            with gr.Accordion("Every model's answer", open=False, elem_id="compare-panel") as ui["compare_panel"]:
                ui["compare"] = gr.Dataframe(show_label=False, elem_id="compare", headers=figures.COMPARE_COLUMNS,
                                             interactive=False, max_height=320)
                gr.Markdown(figures.COMPARE_NOTE, elem_id="compare-note")
        with gr.Column(scale=2):
            ui["upload"] = gr.Image(label="…or upload an image of a digit (any colours, any size)", type="filepath",
                                    sources=["upload", "clipboard"], elem_id="upload", height=220)
    build_teach_panel()
    with gr.Accordion("Look inside the model", open=False, elem_id="inside") as ui["inside"]:
        ui["inside_view"] = gr.HTML(INSIDE_EMPTY, elem_id="inside-view")
    # Kept in the page, for the routes (see stroke_route): the last input, packed, and which panels are open.
    ui["drawing"] = gr.JSON(visible=False)
    ui["visitor"] = gr.Textbox(visible=False)  # the visitor's folder name, for the routes: their models are theirs
    ui["compare_shown"], ui["inside_shown"] = gr.Checkbox(False, visible=False), gr.Checkbox(False, visible=False)
    ui["last"] = gr.State(None)  # Draw's last input as a training started: its live view shows it


def build_teach_panel() -> None:
    with gr.Accordion("Teach it your handwriting", open=True, elem_id="teach"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                ui["examples_gallery"] = gr.Gallery(label="Your examples (click one, then Remove)",
                                                    columns=10, height="auto", elem_id="examples",
                                                    object_fit="contain", allow_preview=False)
                with gr.Row():
                    ui["remove"] = gr.Button("Remove the selected example", size="sm", interactive=False,
                                             elem_id="remove-example")
                    ui["examples_csv"] = gr.DownloadButton("Download them (CSV)", size="sm", elem_id="examples-csv")
                    ui["examples_upload"] = gr.UploadButton("Add from a CSV", file_types=[".csv"], size="sm",
                                                            elem_id="examples-upload")
            with gr.Column(scale=2, min_width=260):
                ui["teach_name"] = gr.Textbox(label="Name for the taught model (empty: <model>+you)",
                                              elem_id="teach-name", max_length=60)
                ui["teach_btn"] = gr.Button("Teach the selected model my examples", variant="primary",
                                            elem_id="teach-btn")
                ui["teach_progress"] = gr.HTML(elem_id="teach-progress")
        ui["teach_status"] = gr.Markdown(figures.examples_note(examples.empty(), DIGITS), elem_id="teach-status")
    ui["examples"], ui["selected"] = gr.State(examples.empty()), gr.State(None)


def build_settings() -> None:
    """Dataset, architecture and its recipe: the fields /train takes, in the order a teacher sets them."""
    choices = [(dataset_title(n), n) for n in offline_datasets()] + [("CSV upload (label + 784 pixel columns)", "csv")]
    ui["dataset"] = gr.Radio(choices, value="mnist", label="Dataset", elem_id="dataset")
    ui["csv_file"] = gr.File(label="CSV file: label + 784 pixel columns (0-255), like Kaggle's train.csv",
                             file_types=[".csv"], type="filepath", visible=False, elem_id="csv")
    archs = [(f"{name} — {a['params']:,} params", name) for name, a in ARCHITECTURES.items()]
    ui["arch"] = gr.Dropdown(archs, value="cnn", label="Architecture", elem_id="arch")
    ui["arch_info"] = gr.Markdown()
    # Recipe-dependent settings start empty (so the API's default is "the recipe") and are filled with the
    # architecture's recipe on load. No min/max: the library's range checks name the setting, Gradio's don't.
    number = dict(precision=0, min_width=120)
    with gr.Row():
        ui["lr"] = gr.Number(None, label="Learning rate", elem_id="lr", min_width=120, step=0.001)
        ui["epochs"] = gr.Number(None, label="Epochs", elem_id="epochs", **number)
    with gr.Row():
        ui["optimizer"] = gr.Dropdown(OPTIMIZERS, value=None, label="Optimizer", elem_id="optimizer", min_width=120)
        ui["batch_size"] = gr.Number(None, label="Batch size", elem_id="batch", **number)
    with gr.Row():
        devices = [(f"auto ({device_key('auto')})", "auto")] + [(d, d) for d in available_devices()[1:]]
        ui["device"] = gr.Dropdown(devices, value="auto", label="Device", elem_id="device", min_width=120)
        ui["subset"] = gr.Number(0, label="Training images (0 = all)", elem_id="subset", **number)
    with gr.Row():
        ui["augment"] = gr.Checkbox(False, label="Augment (small rotations, shifts, zoom)", elem_id="augment")
        ui["seed"] = gr.Number(0, label="Seed", elem_id="seed", **number)


def build_train_tab() -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300, elem_id="train-settings"):
            build_settings()
        with gr.Column(scale=3, min_width=340):
            with gr.Row(elem_id="run-buttons"):
                ui["train"] = gr.Button("Train", variant="primary", elem_id="train-btn", min_width=90)
                ui["stop"] = gr.Button("Stop", variant="stop", elem_id="stop-btn", min_width=90)
                ui["overfit"] = gr.Button(f"Sanity check: overfit {api.SANITY_CHECK['overfit']} images",
                                          elem_id="overfit-btn", min_width=200)
            live = LiveRun("", 0).view()
            ui["progress"] = gr.HTML(live["progress"], elem_id="progress")
            ui["status"] = gr.Textbox(label="Status", elem_id="train-status", interactive=False, lines=2)
            with gr.Row(equal_height=False):
                ui["loss_plot"] = gr.LinePlot(live["loss_plot"], x="step", y="loss", title="Training loss (per step)",
                                              show_label=False, elem_id="loss-plot", height=250, min_width=260)
                with gr.Column(min_width=260):
                    ui["acc_plot"] = gr.HTML(live["acc_plot"], elem_id="acc-plot")
            gr.Markdown("**Watch it learn:** the model's current guess on 30 test digits (✓ right, ✗ wrong), and on "
                        "your drawing from the Draw tab, if there is one.", elem_id="watch-help")
            with gr.Row(equal_height=False, elem_id="watch"):
                ui["watch_grid"] = gr.Image(show_label=False, elem_id="watch-grid", interactive=False, format="png",
                                            buttons=[], min_width=300, scale=3)
                ui["watch_probs"] = gr.Label(show_label=False, num_top_classes=3, elem_id="watch-probs",
                                             min_width=160, scale=1)
            ui["smoothing"] = gr.Markdown(elem_id="smoothing-note")
            ui["epoch_table"] = gr.Dataframe(live["epoch_table"], label="Epochs", elem_id="epoch-table",
                                             interactive=False, max_height=200)
            with gr.Accordion("Run summary (the /train API ends with this)", open=False):
                ui["summary"] = gr.JSON(elem_id="summary", show_label=False)
    build_results()
    ui["result"] = gr.State(None)


def build_results() -> None:
    with gr.Accordion("Results on the test set", open=True, elem_id="results"):
        ui["headline"] = gr.Markdown("Train a model to see its test accuracy, mistakes and confusion matrix here.",
                                     elem_id="headline")
        with gr.Row(equal_height=False):
            ui["per_class"] = gr.BarPlot(figures.per_class_errors([], []), x="class", y="error %",
                                         title="Error rate per class (%)", show_label=False,
                                         elem_id="per-class", y_lim=[0, None], height=300, min_width=300, scale=1)
            ui["confusion"] = gr.Dataframe(label="Confusion matrix (rows: true class, columns: predicted)",
                                           elem_id="confusion", interactive=False, min_width=340, scale=2,
                                           visible=False)
        ui["gallery"] = gr.Gallery(label="Most confident mistakes (true → predicted)", columns=8, height=300,
                                   elem_id="mistakes", object_fit="contain")
        with gr.Row(equal_height=False):
            with gr.Column():
                ui["show_table"] = gr.Button("Show predicted vs true for every test image", visible=False,
                                             elem_id="show-table", size="sm")
                ui["table"] = gr.Dataframe(label="Predicted vs true", elem_id="pred-table", interactive=False,
                                           max_height=300, visible=False)
            ui["ckpt_file"] = gr.File(label="Download the checkpoint", elem_id="ckpt-file", interactive=False)


MINE_NOTE = ("The models you train, teach or upload are **yours alone**: no one else sees them, and they go when you "
             "close this page. Download one to keep it, or share it: everyone then sees it under a name the app makes.")


def build_models_tab() -> None:
    gr.Markdown(MINE_NOTE, elem_id="mine-note")
    ui["models_table"] = gr.Dataframe(figures.models_table(catalogue.entries()), label="Checkpoints",
                                      elem_id="models-table", interactive=False, max_height=420, wrap=True)
    with gr.Row(equal_height=False):
        with gr.Column():
            ui["refresh"] = gr.Button("Refresh", size="sm")
            ui["pick"] = gr.Dropdown(label="Checkpoint to download or share", elem_id="model-pick",
                                     allow_custom_value=True)  # API clients name models listed after the page
            ui["model_file"] = gr.File(label="Download", interactive=False, elem_id="model-file")
            ui["share"] = gr.Button("Share it with everyone (only your own models)", size="sm", elem_id="share-btn",
                                    interactive=False)
            ui["share_status"] = gr.Markdown(elem_id="share-status")
        with gr.Column():
            # No file_types filter: a refused file gets our plain message instead of a toast that leaves the last one.
            ui["ckpt_upload"] = gr.File(label="Upload a checkpoint (.safetensors only)",
                                        elem_id="ckpt-upload")
            ui["upload_status"] = gr.Markdown(elem_id="upload-status")


def wire_draw(demo: gr.Blocks) -> None:
    answer = [ui[k] for k in ANSWER]
    fast = dict(concurrency_id="classify", concurrency_limit=4, show_progress="hidden")
    # The answer first, then the slower views (only those shown) in a request of their own, so the bars never
    # wait: both come from the app's own routes (stroke_route, views_route), fetched by the page (assets/app.js).
    extras = dict(fn=None, inputs=[ui[k] for k in ("drawing", "model", "compare_shown", "inside_shown", "visitor")],
                  outputs=[ui[k] for k in VIEWS], show_progress="hidden",
                  js=f"(...asked) => window.mnistViews(...asked, '{VIEWS_PATH}')")
    stroked = ui["sketch"].change(None, [ui["model"], ui["visitor"]], answer, show_progress="hidden",
                                  js=f"(model, visitor) => window.mnistStroke(model, visitor, '{STROKE_PATH}')")
    # The verdict never concerns a picture still shown, nor a note on an earlier drawing's correction.
    stroked.then(None, None, [ui["upload"], ui["correct_note"]], js="() => [null, '']")
    stroked.success(**extras)
    ui["model"].input(on_model_change, [ui["drawing"], ui["model"]], answer, api_visibility="private",
                      **fast).success(**extras)
    for event in (ui["upload"].upload, ui["upload"].clear):
        uploaded = event(on_upload, [ui["upload"], ui["model"]], [*answer, ui["upload"]], preprocess=False,
                         api_visibility="private", **fast)
        uploaded.success(**extras)
        uploaded.then(None, None, ui["correct_note"], js="() => ''")
    for panel, state in (("compare_panel", "compare_shown"), ("inside", "inside_shown")):
        for event, shown in ((ui[panel].expand, "true"), (ui[panel].collapse, "false")):
            event(None, None, ui[state], js=f"() => {shown}").success(**extras)
    wire_teach(demo, answer, extras)
    with gr.Group(visible=False):  # the API's endpoints; their components stay hidden
        # /draw: a Sketchpad value in, everything Draw shows out, in one answer; its pictures as PNG files.
        api_draw = gr.Button()
        pictures = [gr.Image(label=label, format="png") for label in ("model input", "saliency")]
        # /classify: an image file in, {class: probability} out.
        image = gr.Image(type="filepath", label="image")
        model = gr.Textbox("", label="model (a name from /models; empty = default)")
        label = gr.Label(label="probabilities")
    # preprocess=False: the images arrive as files, each checked from its header before it is decoded.
    api_draw.click(draw, [ui["sketch"], ui["model"]], [ui["probs"], ui["verdict"], *pictures, ui["compare"]],
                   api_name="draw", preprocess=False, **fast)
    image.upload(classify, [image, model], label, api_name="classify", preprocess=False, **fast)


def wire_teach(demo: gr.Blocks, answer: list, extras: dict) -> None:
    shown = [ui[k] for k in ("examples", "examples_gallery", "examples_csv", "teach_status", "remove", "selected")]
    private = dict(api_visibility="private")
    # The drawing whose answer is on screen, or on its way: a correction clicked as a stroke ends waits for it.
    ui["correct"].input(keep_example, [ui["drawing"], ui["correct"], ui["examples"]],
                        [*shown, ui["correct"], ui["correct_note"]],
                        js="async (drawing, label, ex) => [await window.mnistDrawing(drawing), label, ex]", **private)
    ui["examples_gallery"].select(select_example, None, [ui["selected"], ui["remove"]], **private)
    ui["remove"].click(remove_example, [ui["examples"], ui["selected"]], shown, **private)
    ui["examples_upload"].upload(upload_examples, [ui["examples_upload"], ui["examples"]], shown, preprocess=False,
                                 **private)
    taught = ui["teach_btn"].click(teach_clicked, None, ui["teach_btn"], **private).then(
        teach, [ui["examples"], ui["model"], ui["teach_name"]], [*shown, ui["teach_progress"], ui["model"]],
        concurrency_id="train", concurrency_limit=Trainers.slots(), show_progress="hidden", api_name="teach",
        validator=one_run_each(teach))
    queue_eta.watch(demo, taught, "teach")
    for outcome in (taught.success, taught.failure):  # not .then(): it does not fire after an error
        outcome(lambda: gr.Button(interactive=True), None, ui["teach_btn"], **private)
    taught.success(on_model_change, [ui["drawing"], ui["model"]], answer, **private).success(**extras)  # the new model
    # /correct for API clients: an image file and its right label join this session's examples.
    with gr.Group(visible=False):
        image, label, note = gr.Image(type="filepath", label="image"), gr.Textbox(label="label"), gr.Markdown()
    image.upload(correct_api, [image, label, ui["examples"]], [ui["examples"], note], preprocess=False,
                 api_name="correct")


def wire_train(demo: gr.Blocks) -> None:
    stream = [ui[k] for k in ("progress", "status", "loss_plot", "acc_plot", "epoch_table", "summary", "result",
                              "watch_grid", "watch_probs")]
    results = [ui[k] for k in ("headline", "per_class", "confusion", "gallery", "table", "ckpt_file", "show_table")]
    lists = [ui[k] for k in ("model", "models_table", "pick", "train", "overfit")]
    ui["dataset"].change(lambda ds: gr.File(visible=ds == "csv"), ui["dataset"], ui["csv_file"],
                         api_visibility="private")
    recipe_outputs = [ui[k] for k in (*RECIPE_FIELDS, "arch_info", "smoothing")]
    for trigger in (ui["arch"].input, ui["device"].input, demo.load):
        trigger(fill_recipe, [ui["arch"], ui["device"]], recipe_outputs, api_visibility="private")
    for button, fn, name in ((ui["train"], train, RUN_KINDS[False]), (ui["overfit"], sanity_check, RUN_KINDS[True])):
        started = button.click(start_run, [ui["result"], ui["drawing"]],
                               [ui[k] for k in ("status", "train", "overfit", "headline", "last")],
                               api_visibility="private")
        run_event = started.then(fn, [ui[k] for k in (*SETTINGS, "last")], stream, concurrency_id="train",
                                 concurrency_limit=Trainers.slots(), show_progress="minimal",
                                 show_progress_on=[ui["progress"]], api_name=name, validator=one_run_each(fn))
        queue_eta.watch(demo, run_event, name)
        # Not .then(): Gradio 6.31's frontend fires a .then() only after a success (an error skips its "all"
        # triggers), so recovery after an error is wired to .failure() explicitly.
        run_event.success(show_results, [ui["summary"], ui["result"], ui["model"]], [*results, *lists],
                          api_visibility="private")
        run_event.failure(run_failed, ui["result"], [ui["train"], ui["overfit"], ui["headline"]],
                          api_visibility="private")
    ui["show_table"].click(prediction_table, ui["result"], ui["table"], api_visibility="private")
    # Stop must never queue behind the run it stops, so it has no concurrency limit.
    ui["stop"].click(stop_clicked, ui["status"], ui["status"], concurrency_limit=None, api_visibility="private")
    with gr.Group(visible=False):  # /stop for API clients, which want its answer in words
        stop_api, said = gr.Button(), gr.Textbox()
    stop_api.click(stop, None, said, concurrency_limit=None, api_name="stop")


def wire_models(models_tab: gr.Tab) -> None:
    # /models returns just the table; the download picker follows it.
    ui["refresh"].click(models_table, None, ui["models_table"], api_name="models").then(
        pick_dropdown, ui["pick"], ui["pick"], api_visibility="private")
    models_tab.select(models_table, None, ui["models_table"], api_visibility="private").then(
        pick_dropdown, ui["pick"], ui["pick"], api_visibility="private")
    ui["pick"].change(picked, ui["pick"], [ui["model_file"], ui["share"]], api_visibility="private")
    ui["share"].click(share_model, ui["pick"], [ui[k] for k in ("share_status", "models_table", "pick")],
                      api_name="share")
    ui["ckpt_upload"].upload(upload_checkpoint, [ui["ckpt_upload"], ui["model"]],
                             [ui[k] for k in ("upload_status", "models_table", "pick", "model")], preprocess=False,
                             api_name="upload_checkpoint")
    ui["ckpt_upload"].clear(lambda: "", None, ui["upload_status"], api_visibility="private")


def build_demo() -> gr.Blocks:
    """The whole app; launch it with `build_demo().launch(**launch_options())`."""
    # Files Gradio keeps for pages (uploads, galleries) are deleted an hour after they were written.
    with gr.Blocks(title="MNIST playground", delete_cache=(1800, 3600)) as demo:
        gr.Markdown("## ✍️ MNIST playground <span>· draw digits for a neural network, train your own models live"
                    "</span>", elem_id="header")
        with gr.Tabs():
            with gr.Tab("Draw", id="draw") as draw_tab:
                build_draw_tab()
            with gr.Tab("Train", id="train"):
                build_train_tab()
            with gr.Tab("Models", id="models") as models_tab:
                build_models_tab()
        wire_draw(demo)
        wire_train(demo)
        wire_models(models_tab)
        # Other sessions may have trained or uploaded models since the server started or the tab was last seen.
        draw_tab.select(model_picker, ui["model"], ui["model"], api_visibility="private")
        demo.load(None, None, None, js=theme.page_script())
        # Gradio deletes a session's state an hour after its tab closed (or a day after it was set, for a tab left
        # open); the visitor's models and files go with it.
        ui["visitor_state"] = gr.State(None, time_to_live=sessions.TTL_S * sessions.OPEN_FACTOR,
                                       delete_callback=lambda visitor: catalogue.visitors.forget(visitor))
        lists = [ui[k] for k in ("model", "models_table", "pick", "model_file", "share", "visitor", "visitor_state")]
        demo.load(refresh_on_load, [ui["model"], ui["pick"]], lists, api_visibility="private")
    # Queued people hear their place and time every QUEUE_NEWS_S, not only when someone joins or a run starts:
    # a time first known while they wait (FirstRunEta) reaches them too. A visitor queues one training at a time
    # (one_run_each), so a class of 30 fits with room to spare.
    demo.queue(max_size=QUEUE_MAX, default_concurrency_limit=4, status_update_rate=QUEUE_NEWS_S)
    demo._queue.sleep_when_free = QUEUE_POLL_S  # no public setting; a queued event waits at most this much longer
    return demo


def login() -> tuple[str, str] | None:
    """MNIST_DEMO_AUTH=user:password (a Space secret, say) turns on Gradio's login for every route. Set but not of
    that shape, the app does not start: a class that asked for a login never gets an open app by a typo."""
    raw = os.environ.get(AUTH_ENV, "")
    if not raw:
        return None
    user, _, password = raw.partition(":")
    if not user or not password:
        raise SystemExit(f"{AUTH_ENV} must be user:password, both non-empty")
    return user, password


def launch_options() -> dict:
    """Settings that Gradio 6 takes at launch() rather than in Blocks(); tests use them too."""
    # Checkpoint folders may live outside the working directory (env settings), yet must stay downloadable.
    folders = [str(catalogue.shipped_dir), str(catalogue.runs_dir)]
    sweep = lambda: catalogue.visitors.sweep(sessions.TTL_S * sessions.OPEN_FACTOR)  # noqa: E731  API clients' folders
    return dict(theme=theme.theme(), css=theme.css(), max_file_size="25mb", allowed_paths=folders, auth=login(),
                app_kwargs={**theme.compression(), "lifespan": sessions.expiring_sessions(on_sweep=sweep),
                            "routes": [Route(STROKE_PATH, stroke_route, methods=["POST"]),
                                       Route(VIEWS_PATH, views_route, methods=["POST"])]})


if __name__ == "__main__":
    api.serve_only()
    trainers.worker("auto").start()  # imports torch in the background, so the first Train starts at once
    build_demo().launch(**launch_options())  # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are honoured by launch()
