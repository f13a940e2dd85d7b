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
  // Gradio 6.31's sketchpad uploads the whole canvas again each time the page reads its value, which it does for
  // every status message of a stroke's event: ~10 uploads a stroke, most of them of bytes the server already holds.
  // The server names an upload by its content, so the same file always gets the same answer: each distinct file is
  // sent once, and its answer reused for a minute (a fraction of the server's cache lifetime).
  const sent = [];
  const fetchOnce = window.fetch;
  window.fetch = function (url, options) {
    const parts = String(url).includes('/gradio_api/upload') && options?.body instanceof FormData
      ? [...options.body.values()] : [];
    if (parts.length !== 1 || !(parts[0] instanceof Blob)) return fetchOnce.apply(this, arguments);
    const args = arguments;
    return parts[0].arrayBuffer().then((buffer) => {
      const bytes = new Uint8Array(buffer), now = Date.now();
      const same = sent.find((s) => now - s.at < 60000 && s.name === parts[0].name
        && s.bytes.length === bytes.length && s.bytes.every((b, i) => b === bytes[i]));
      if (same) return same.answer.then((text) => new Response(text, {headers: {'Content-Type': 'application/json'}}));
      const response = fetchOnce.apply(this, args);
      const entry = {bytes, name: parts[0].name, at: now,
                     answer: response.then((r) => (r.ok ? r.clone().text() : Promise.reject()))};
      entry.answer.catch(() => sent.includes(entry) && sent.splice(sent.indexOf(entry), 1));
      sent.unshift(entry);
      sent.length = Math.min(sent.length, 12);
      return response;
    });
  };
  // A dropdown left with Tab stays open over the fields below it: once the focus has moved on, tell the dropdown
  // it lost the focus (Gradio 6.31 closes its list on that event, but Tab does not deliver it).
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Tab' || !e.target.closest('.wrap-inner')) return;
    const input = e.target;
    setTimeout(() => input.dispatchEvent(new Event('blur')), 0);
  }, true);
}
