/* The normkit decks (slides_assets/build.py): size each figure to the room its slide leaves.

   A figure (a matplotlib PNG, or the PNG a slider panel falls back to) is drawn at 100 dpi with no
   text below 11 pt: 15 px at its own size. So it is shown at its own size or larger: grown to fill
   the height the slide's text leaves (never beyond MAX_UPSCALE, where a bitmap starts to blur, nor
   beyond the slide's width), shrunk only when it cannot fit otherwise (the browser tests then report
   the slide: its text would be too small to read from the back row).

   Runs once, when reveal.js is ready, the fonts are loaded (they set the text's height) and MathJax
   has typeset; then sets <body data-nk-fitted>. Slides are laid out in reveal.js's own 1280×720
   coordinates, so the result does not depend on the window. */
(function () {
  "use strict";
  const MAX_UPSCALE = 1.25;
  const FONTS = [["Noto Sans KR normkit", "가"], ["Noto Sans Mono normkit", "x"],
                 ["Noto Sans Symbols2 normkit", "\u2713"], ["Source Sans Pro", "x"]];

  function leafSlides() {
    return [...document.querySelectorAll(".reveal .slides section")].filter(s => !s.querySelector("section"));
  }

  function shown(section, fn) {           // reveal.js hides far slides with display: none
    const chain = [section, section.parentElement.closest("section")].filter(Boolean);
    const saved = chain.map(s => [s.style.display, s.hidden]);
    chain.forEach(s => { s.style.display = "block"; s.hidden = false; });
    try { return fn(); } finally { chain.forEach((s, i) => { s.style.display = saved[i][0]; s.hidden = saved[i][1]; }); }
  }

  function fit(section, height) {
    const imgs = [...section.querySelectorAll(".jp-RenderedImage img")].filter(i => i.naturalWidth > 0);
    if (!imgs.length) return;
    shown(section, () => {
      imgs.forEach(i => { i.removeAttribute("width"); i.removeAttribute("height");
                          i.style.width = i.naturalWidth + "px"; i.style.height = "auto"; });
      const room = (i) => i.closest(".jp-OutputArea-output").clientWidth || section.clientWidth;
      let k = MAX_UPSCALE;
      for (const i of imgs) k = Math.min(k, room(i) / i.naturalWidth);
      const imageHeight = imgs.reduce((h, i) => h + i.naturalHeight, 0);
      const spare = height - section.scrollHeight;          // the slide at k = 1
      k = Math.min(k, (imageHeight + spare) / imageHeight);
      for (let round = 0; round < 4; round++) {             // side by side, rounding: shrink until it fits
        imgs.forEach(i => { i.style.width = (k * i.naturalWidth).toFixed(1) + "px"; });
        const over = section.scrollHeight - height;
        if (over <= 0) break;
        k *= Math.max(0.5, (imageHeight * k - over) / (imageHeight * k));
      }
      section.dataset.nkFigureScale = k.toFixed(3);
    });
  }

  async function fitAll() {
    await Promise.all(FONTS.map(([family, sample]) => document.fonts.load(`17px "${family}"`, sample).catch(() => null)));
    await document.fonts.ready;
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
    await Promise.all([...document.images].map(i => (i.decode ? i.decode().catch(() => null) : null)));
    const height = Reveal.getConfig().height;
    leafSlides().forEach(s => fit(s, height));
    Reveal.layout();
    document.body.dataset.nkFitted = "1";
  }

  // The speaker view (S) is a window the notes plugin writes itself, in Helvetica: give its notes the
  // deck's fonts, so Korean in a note is not a row of boxes on a machine without a CJK font.
  const here = document.currentScript.src;
  const face = (family, file, range) => `@font-face { font-family: "${family}"; src: url("${new URL("../fonts/" + file, here).href}");` +
                                        (range ? ` unicode-range: ${range};` : "") + " }";
  const SPEAKER_CSS = [face("Noto Sans KR normkit", "NotoSansKR-normkit.ttf"),
                       face("Noto Sans Mono normkit", "NotoSansMono-normkit.woff"),
                       face("Noto Sans Symbols2 normkit", "NotoSansSymbols2-normkit.woff", "U+2600-27BF"),
                       '.speaker-controls-notes, .speaker-controls-notes .value { font-family: "Source Sans Pro", ' +
                       '"Noto Sans Symbols2 normkit", "Noto Sans KR normkit", "Noto Sans Mono normkit", sans-serif; }'];
  const open = window.open;
  window.open = function (...args) {
    const win = open.apply(this, args);
    const style = () => {
      if (!win || win.closed || !win.document || !win.document.querySelector(".speaker-controls-notes")) return false;
      if (win.document.getElementById("nk-speaker")) return true;
      const css = win.document.createElement("style");
      css.id = "nk-speaker";
      css.textContent = SPEAKER_CSS.join("\n");
      win.document.head.appendChild(css);
      return true;
    };
    let tries = 0;
    const timer = setInterval(() => { if (style() || ++tries > 300) clearInterval(timer); }, 100);  // up to 30 s
    return win;
  };

  window.normkitDeck = { fitAll, leafSlides, MAX_UPSCALE };
  if (Reveal.isReady()) fitAll(); else Reveal.on("ready", fitAll);
})();
