"""The floor for the classroom benchmark: a bare Gradio Sketchpad app whose handler returns a fixed Label."""

import gradio as gr

# Two fixed answers, alternated, so that a browser sees each event's answer arrive (both read "0"); computing them
# costs nothing.
ANSWERS = [{str(d): 0.5 if d == 0 else 0.05 for d in range(10)}, {str(d): 0.6 if d == 0 else 0.04 for d in range(10)}]
calls = [0]


def fixed(sketch) -> dict:
    calls[0] += 1
    return ANSWERS[calls[0] % 2]


with gr.Blocks(title="floor") as demo:
    # The same canvas as the app's Draw tab (size, brush, no layers or crop), so the browser does the same work.
    sketch = gr.Sketchpad(elem_id="sketch", type="numpy", image_mode="RGBA", canvas_size=(280, 280), height=400,
                          layers=False, transforms=(), fixed_canvas=True, brush=gr.Brush(default_size=11))
    label = gr.Label(num_top_classes=10, elem_id="probs")
    sketch.change(fixed, sketch, label, show_progress="hidden", trigger_mode="always_last", api_name="draw")

if __name__ == "__main__":
    demo.queue().launch()
