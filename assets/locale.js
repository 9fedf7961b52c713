() => {
  // Gradio picks the page's language from the browser and writes it to <html lang>, but sets no direction, and
  // gives every block dir="ltr". An Arabic page turns right to left here: <html dir="rtl">, which style.css's
  // "right to left" section carries into the blocks. The language can change after load (Gradio's settings
  // panel), so the direction follows the lang attribute, not the first value.
  // RTL_LOCALES in playground/i18n.py: the translated languages written right to left.
  const RTL = ["ar"];
  const root = document.documentElement;
  const follow = () => {
    const lang = (root.getAttribute("lang") || "").toLowerCase().split("-")[0];
    const dir = RTL.includes(lang) ? "rtl" : "ltr";
    if (root.getAttribute("dir") !== dir) root.setAttribute("dir", dir);
  };
  follow();
  new MutationObserver(follow).observe(root, { attributes: true, attributeFilter: ["lang"] });
}
