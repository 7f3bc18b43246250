// The keyboard path of the review console: n next, u uphold, o overturn, c claim, r release,
// q back to the queue, / the filter. Keys typed into a field are the field's.
document.addEventListener("keydown", (event) => {
  const field = event.target.closest("input, textarea, select");
  if (event.key === "Escape" && field) { field.blur(); return; }
  if (field || event.ctrlKey || event.metaKey || event.altKey) return;
  const submit = (formId, buttonId) => {
    const form = document.getElementById(formId);
    if (!form) return false;
    form.requestSubmit(buttonId ? document.getElementById(buttonId) : undefined);
    return true;
  };
  const actions = {
    n: () => submit("next"),
    u: () => submit("decide", "uphold"),
    o: () => submit("decide", "overturn"),
    c: () => submit("claim"),
    r: () => submit("release"),
    q: () => { const back = document.getElementById("back"); if (back) back.click(); return !!back; },
    "/": () => { const filter = document.getElementById("filter"); if (filter) filter.focus(); return !!filter; },
  };
  if (actions[event.key] && actions[event.key]()) event.preventDefault();
});
