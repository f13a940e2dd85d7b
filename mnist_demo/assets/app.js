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
  // A dropdown left with Tab stays open over the fields below it: once the focus has moved on, tell the dropdown
  // it lost the focus (Gradio 6.31 closes its list on that event, but Tab does not deliver it).
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Tab' || !e.target.closest('.wrap-inner')) return;
    const input = e.target;
    setTimeout(() => input.dispatchEvent(new Event('blur')), 0);
  }, true);
}
