// Runs the dashboard's script, as the server served it, against the real server with a
// minimal DOM; types the admin token into the form when one is given; prints what the
// script put on the page, element by element, as JSON (a table as rows of cells).
//
//   node dashboard.mjs SERVER_URL SCRIPT_FILE ADMIN_HEADER [TOKEN]
import { readFileSync } from "node:fs";
import vm from "node:vm";

const [server, scriptFile, header, token] = process.argv.slice(2);

class Element {
  constructor() {
    this.textContent = "";
    this.className = "";
    this.hidden = false;
    this.value = "";
    this.children = [];
    this.listeners = {};
  }
  appendChild(child) {
    this.children.push(child);
    return child;
  }
  replaceChildren() {
    this.children = [];
  }
  createTHead() { return this.appendChild(new Element()); }
  createTBody() { return this.appendChild(new Element()); }
  insertRow() { return this.appendChild(new Element()); }
  insertCell() { return this.appendChild(new Element()); }
  addEventListener(type, listener) {
    this.listeners[type] = listener;
  }
}

// The page's elements by id, as index.html has them.
const elements = {};
const byId = (id) => (elements[id] ??= new Element());
byId("admin").hidden = true;
const storage = new Map();
let pending = 0;
const context = vm.createContext({
  document: {
    currentScript: { dataset: { header } },
    getElementById: byId,
    createElement: () => new Element(),
  },
  sessionStorage: { getItem: (k) => storage.get(k) ?? null, setItem: (k, v) => storage.set(k, String(v)) },
  fetch: async (path, options) => {
    pending++;
    try {
      return await fetch(server + path, options);
    } finally {
      pending--;
    }
  },
  setInterval: () => 0,
  Promise, Date, Math, Object, String, Error, console,
});
vm.runInContext(readFileSync(scriptFile, "utf8"), context, { filename: "dashboard.js" });

const settle = async () => {
  const deadline = Date.now() + 20000;
  do {
    await new Promise((resolve) => setTimeout(resolve, 20));
  } while (pending > 0 && Date.now() < deadline);
  await new Promise((resolve) => setTimeout(resolve, 20));
};
await settle();
if (token !== undefined) {
  byId("token").value = token;
  byId("token-form").listeners.submit({ preventDefault() {} });
  await settle();
}

// A table (head and body) as its rows of cell texts; anything else as its text.
const rows = (table) => table.children.flatMap((part) => part.children.map((row) => row.children.map((c) => c.textContent)));
const dump = (element) => (element.children.length ? rows(element) : element.textContent);
const page = {};
for (const [id, element] of Object.entries(elements)) {
  page[id] = { text: dump(element), className: element.className, hidden: element.hidden };
}
console.log(JSON.stringify(page));
