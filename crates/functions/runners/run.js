// Sky Island's JavaScript runner: calls one export of the package with the arguments the
// server parsed, awaits it, and prints what it returns. argv names the package and the
// module (JSON); the module is loaded first, then the call is read from stdin as JSON data,
// never as source: a pre-started runner waits there, its package loaded, for its one call.
// Exit 87: no such module or export; 88: the package does not
// load (a syntax error); an exception: its stack and exit 1. When the process then exits
// with 0 (its event loop empty, the package's own exit listeners run), it writes the status
// as one byte to stdin (a socket): Sky Island answers then and ends the jail.
// CommonJS, not an ES module: the ES loader's start costs every call ~5 ms more. ES
// modules of the package are loaded with import().
"use strict";
const { existsSync, readFileSync, writeSync } = require("node:fs");
const { join } = require("node:path");

function fail(code, message) {
  process.stderr.write(`skyisland-runner: ${message}\n`, () => process.exit(code));
}

// The package's entry point: package.json "exports" (".", with the import, node, require
// or default condition), then "main", then index.js.
function entry(pkg) {
  const manifest = join(pkg, "package.json");
  let json = {};
  if (existsSync(manifest)) {
    try {
      json = JSON.parse(readFileSync(manifest, "utf8"));
    } catch (e) {
      return { error: `package.json does not parse: ${e.message}` };
    }
  }
  const pick = (target) => {
    if (typeof target === "string") return target;
    if (target && typeof target === "object") {
      for (const condition of ["import", "node", "require", "default"]) {
        const found = pick(target[condition]);
        if (found) return found;
      }
    }
    return null;
  };
  let exports = json.exports;
  if (exports && typeof exports === "object" && !Array.isArray(exports) && "." in exports) exports = exports["."];
  const chosen = pick(exports) || json.main || (existsSync(join(pkg, "index.mjs")) ? "index.mjs" : "index.js");
  return { file: join(pkg, chosen) };
}

async function main() {
  const [pkg, moduleName] = [process.argv[2], JSON.parse(process.argv[3])];
  let file;
  if (moduleName === null) {
    const found = entry(pkg);
    if (found.error) return fail(88, found.error);
    file = found.file;
  } else {
    file = [".mjs", ".js", ".cjs"].map((ext) => join(pkg, moduleName + ext)).find((f) => existsSync(f));
    if (!file) return fail(87, `no file ${moduleName}.js, .mjs or .cjs in the package`);
  }
  if (!existsSync(file)) return fail(87, `the package's entry point ${file.slice(pkg.length + 1)} does not exist`);
  let module;
  try {
    try {
      if (file.endsWith(".mjs")) throw Object.assign(new Error("an ES module"), { code: "ERR_REQUIRE_ESM" });
      const exported = require(file);
      module = exported !== null && typeof exported === "object" ? exported : { default: exported };
    } catch (e) {
      if (e.code !== "ERR_REQUIRE_ESM") throw e;
      module = await import(require("node:url").pathToFileURL(file).href);
    }
  } catch (e) {
    if (e instanceof SyntaxError) return fail(88, `${e.name}: ${e.message} (${file.slice(pkg.length + 1)})`);
    throw e;
  }
  // All of stdin: the call (a pipe; read synchronously, as nothing else runs meanwhile).
  const spec = JSON.parse(readFileSync(0, "utf8"));
  let fn = Object.prototype.hasOwnProperty.call(module, spec.name) ? module[spec.name] : undefined;
  if (fn === undefined && module.default && typeof module.default === "object") {
    fn = Object.prototype.hasOwnProperty.call(module.default, spec.name) ? module.default[spec.name] : undefined;
  }
  if (fn === undefined && spec.name === "default") fn = module.default;
  if (typeof fn !== "function") return fail(87, `the module does not export a function ${spec.name}`);
  const args = spec.args;
  for (const i of spec.undefined) args[i] = undefined;
  const result = await fn(...args);
  let text;
  if (result === undefined || result === null) text = "";
  else if (typeof result === "string") text = result;
  else text = JSON.stringify(result, (_, v) => (typeof v === "bigint" ? v.toString() : v)) ?? "";
  process.stdout.write(text);
  // Registered last, so it runs after the exit listeners the package added during its call.
  process.on("exit", (code) => {
    if (code !== 0) return;
    try {
      writeSync(0, Buffer.of(0));
    } catch {
      // Not run by Sky Island: nobody to tell.
    }
  });
}

main().catch((e) => {
  process.stderr.write(`${e && e.stack ? e.stack : String(e)}\n`, () => process.exit(1));
});
