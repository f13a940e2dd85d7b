() => {
  // After load and after every clear, Gradio 6.31's Sketchpad falls back to its "image" tool and ignores strokes:
  // whenever no drawing tool is highlighted, click the first toolbar tool (the brush) so the next stroke draws.
  const ensureBrush = () => {
    const tools = document.querySelectorAll('#sketch .toolbar-wrap button');
    if (tools.length && ![...tools].some((b) => b.classList.contains('highlight'))) tools[0].click();
    // The canvas has no accessible name of its own.
    document.querySelectorAll('#sketch canvas:not([aria-label])').forEach((c) => {
      c.setAttribute('role', 'img');
      c.setAttribute('aria-label', 'Drawing area: draw one digit with the mouse or a finger');
    });
  };
  let queued = false;
  new MutationObserver(() => {
    if (!queued) { queued = true; requestAnimationFrame(() => { queued = false; ensureBrush(); }); }
  }).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['class']});
  ensureBrush();
  const fetchDirect = window.fetch;
  // The sketchpad hands each stroke's images to Gradio (`accept_blobs`) before its change event; no Gradio event
  // reads them (a stroke's answer has its own route, app.py's stroke_route), so the newest stroke's stay here.
  let canvas = {id: null, images: {}};
  const keepBlob = (form) => {
    if (canvas.id !== form.get('id')) canvas = {id: form.get('id'), images: {}};
    if (['layer', 'composite'].includes(form.get('type'))) canvas.images[form.get('type')] = form.get('file');
    return Promise.resolve(new Response('null', {headers: {'Content-Type': 'application/json'}}));
  };
  // Clearing the canvas sends no images: its change event must find none.
  document.addEventListener('click', (e) => {
    if (e.target.closest?.('#sketch button[aria-label="Clear canvas"]')) canvas = {id: null, images: {}};
  }, true);
  window.fetch = function (url, options) {
    if (String(url).includes('/component_server') && options?.body instanceof FormData
        && options.body.get('fn_name') === 'accept_blobs') return keepBlob(options.body);
    return fetchDirect.apply(this, arguments);
  };
  // A stroke's answer, in one request: the newest stroke's images, the model's name and the visitor's folder (their
  // own models are theirs) to stroke_route, back the
  // values of the bars, the verdict, the model's input and the kept drawing. Every call returns the newest stroke's
  // answer, so a slow answer to an older stroke never replaces a newer one on screen.
  const root = () => String(window.gradio_config?.root ?? '').replace(/\/$/, '');
  const answer = async (model, visitor, path) => {
    const form = new FormData();
    Object.entries(canvas.images).forEach(([type, image]) => form.append(type, image));
    if (model) form.append('model', model);
    if (visitor) form.append('visitor', visitor);
    try {
      const response = await fetchDirect(root() + path, {method: 'POST', body: form});
      if (response.ok) return await response.json();
    } catch (error) { /* said below, in the verdict */ }
    return [null, '⚠️ The server did not answer this stroke; draw again in a moment.', null, null];
  };
  let newest = null, strokeEnded = 0, answered = 0, answeredDrawing = null;
  window.mnistStroke = async (model, visitor, path) => {
    newest = answer(model, visitor, path);
    let waited, result;
    do { waited = newest; result = await waited; } while (waited !== newest);
    [answered, answeredDrawing] = [performance.now(), result[3]];
    return result;
  };
  // The slower views, one request at a time per tab: those asked for meanwhile wait, and only the newest drawing's
  // are fetched, for all of them. A failed request leaves the views as they were.
  const views = async (asked, path) => {
    const [drawing, model, compare, inside, visitor] = asked;
    try {
      const response = await fetchDirect(root() + path, {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                       body: JSON.stringify({drawing, model, compare, inside, visitor})});
      if (response.ok) return await response.json();
    } catch (error) { /* nothing new to show */ }
    return [undefined, undefined, undefined];
  };
  let viewsRunning = null, viewsNext = null;
  window.mnistViews = (...asked) => {
    const path = asked.pop();
    if (!viewsRunning) {
      viewsRunning = views(asked, path).finally(() => { viewsRunning = null; });
      return viewsRunning;
    }
    if (!viewsNext) {
      const next = {asked};
      next.promise = viewsRunning.then(() => { viewsNext = null; return window.mnistViews(...next.asked, path); });
      viewsNext = next;
    }
    viewsNext.asked = asked;
    return viewsNext.promise;
  };
  // A correction is about the drawing on the canvas: one clicked as a stroke ends (its answer takes ~0.5 s to
  // come, the canvas's export included) waits for that stroke's answer, up to 5 s.
  document.addEventListener('pointerup', (e) => {
    if (e.target.closest?.('#sketch canvas')) strokeEnded = performance.now();
  }, true);
  window.mnistDrawing = async (drawing) => {
    if (strokeEnded <= answered) return drawing;  // nothing on its way: the page holds the newest input
    const start = performance.now();
    while (strokeEnded > answered && performance.now() - start < 5000) await new Promise((r) => setTimeout(r, 50));
    return strokeEnded > answered ? drawing : answeredDrawing;
  };
  // A dropdown left with Tab stays open over the fields below it: once the focus has moved on, tell the dropdown
  // it lost the focus (Gradio 6.31 closes its list on that event, but Tab does not deliver it).
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Tab' || !e.target.closest('.wrap-inner')) return;
    const input = e.target;
    setTimeout(() => input.dispatchEvent(new Event('blur')), 0);
  }, true);
}
