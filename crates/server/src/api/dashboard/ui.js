// Small DOM helpers. Every value reaches the page as text (textContent), never as HTML.

/** An element: `el("td", {class: "n"}, "12", child…)`. Attributes starting with "on" are listeners. */
export function el(tag, attributes = {}, ...children) {
  const node = tag === "svg" || tag === "path" || tag === "line" || tag === "text" || tag === "polyline"
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function ms(value) {
  if (value === undefined || value === null) return "–";
  if (value >= 1000) return (value / 1000).toFixed(2) + " s";
  return (value >= 100 ? value.toFixed(0) : value.toFixed(value >= 10 ? 1 : 2)) + " ms";
}

export function bytes(value) {
  if (value === undefined || value === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (value >= 1024 && i < units.length - 1) { value /= 1024; i++; }
  return (i === 0 ? value : value.toFixed(1)) + " " + units[i];
}

export function ago(unixMs) {
  if (!unixMs) return "never";
  const s = Math.max(0, (Date.now() - unixMs) / 1000);
  if (s < 60) return Math.round(s) + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return (s / 3600).toFixed(1) + " h ago";
  return new Date(unixMs).toISOString().slice(0, 16).replace("T", " ");
}

export function time(value) {
  if (!value) return "–";
  const date = typeof value === "number" ? new Date(value) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

export function statusClass(status) {
  if (status >= 500) return "bad";
  if (status >= 400) return "warn";
  return "ok";
}

/**
 * A table that sorts by any column (click or Enter on its header) and filters by text;
 * `.update(rows)` on what it returns redraws it with new rows.
 * columns: [{key, label, value(row) → sortable, render(row) → node|text, numeric}]
 */
export function dataTable({ columns, rows, filter = true, empty = "Nothing yet.", id, sortBy, descending = false, label }) {
  let sortKey = sortBy ?? columns[0].key;
  let desc = descending;
  let query = "";
  const body = el("tbody");
  const headRow = el("tr");
  const table = el("table", { id, "aria-label": label }, el("thead", {}, headRow), body);
  const counter = el("span", { class: "muted" });
  const value = (column, row) => (column.value ? column.value(row) : row[column.key]);
  function draw() {
    headRow.replaceChildren(...columns.map((column) => {
      const active = column.key === sortKey;
      const button = el("button", { type: "button", onclick: () => { desc = active ? !desc : column.numeric === true; sortKey = column.key; draw(); } },
        column.label, active ? (desc ? " ↓" : " ↑") : "");
      return el("th", { class: column.numeric ? "n" : null, "aria-sort": active ? (desc ? "descending" : "ascending") : null, scope: "col" }, button);
    }));
    const column = columns.find((c) => c.key === sortKey) || columns[0];
    const shown = rows.filter((row) => !query || columns.some((c) => String(value(c, row) ?? "").toLowerCase().includes(query)));
    shown.sort((a, b) => {
      const x = value(column, a), y = value(column, b);
      const order = x === y ? 0 : x === undefined || x === null ? 1 : y === undefined || y === null ? -1 : x < y ? -1 : 1;
      return desc ? -order : order;
    });
    body.replaceChildren(...shown.map((row) => el("tr", {}, columns.map((c) => {
      const content = c.render ? c.render(row) : value(c, row);
      return el("td", { class: c.numeric ? "n" : c.code ? "code" : null }, content ?? "–");
    }))));
    if (shown.length === 0) body.append(el("tr", {}, el("td", { colspan: columns.length, class: "muted" }, rows.length ? "No row matches the filter." : empty)));
    const noun = (n) => `${n} row${n === 1 ? "" : "s"}`;
    counter.textContent = rows.length === shown.length ? noun(rows.length) : `${shown.length} of ${noun(rows.length)}`;
  }
  draw();
  const parts = [];
  /** New rows, same sorting and filter; the focused control (by its data-focus-key) keeps focus. */
  const update = (newRows) => {
    const focused = document.activeElement?.dataset?.focusKey;
    rows = newRows;
    draw();
    if (focused) body.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`)?.focus();
  };
  if (filter) {
    const input = el("input", { type: "search", placeholder: "Filter", "aria-label": `Filter ${label || "rows"}`, oninput: (e) => { query = e.target.value.toLowerCase(); draw(); } });
    parts.push(el("div", { class: "toolbar" }, input, counter));
  }
  parts.push(el("div", { class: "table-wrap" }, table));
  return Object.assign(el("div", {}, parts), { update });
}

/** Asks in the page's dialog; resolves true when confirmed. */
export function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const done = (answer) => () => { dialog.close(); cleanup(); resolve(answer); };
    const ok = document.getElementById("confirm-ok");
    const cancel = document.getElementById("confirm-cancel");
    const yes = done(true), no = done(false);
    const cleanup = () => { ok.removeEventListener("click", yes); cancel.removeEventListener("click", no); dialog.removeEventListener("cancel", no); };
    ok.addEventListener("click", yes);
    cancel.addEventListener("click", no);
    dialog.addEventListener("cancel", no);
    dialog.showModal();
  });
}

/** Labelled facts: [[label, value], …]. */
export function facts(pairs) {
  return el("dl", { class: "facts" }, pairs.flatMap(([label, value]) => [el("dt", {}, label), el("dd", {}, value ?? "–")]));
}
