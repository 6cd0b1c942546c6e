// Runs against a real server started by Sky Island's test suite
// (crates/skyisland/tests/clients.rs), which passes its address and fixtures in
// SKYISLAND_TEST_* variables.
import { test } from "node:test";
import assert from "node:assert/strict";

import { Client, SkyIslandError } from "../index.js";

function env(name) {
  const value = process.env[`SKYISLAND_TEST_${name}`];
  if (!value) throw new Error(`SKYISLAND_TEST_${name} is not set: run these tests through cargo test --test clients`);
  return value;
}

const client = (options) => new Client(env("HOST"), Number(env("PORT")), options);

async function rejects(promise, status) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof SkyIslandError, String(e));
    assert.equal(e.status, status, e.message);
    return true;
  });
}

test("the original shape", async () => {
  assert.equal(await client().function(env("GEO"), "Encode(57.64911, 10.40744)"), "57.6491|10.4074");
  const answer = await client().function(env("GEO"), "Encode(57.64911, 10.40744)", { fullResp: true });
  assert.ok(answer.timestamp > 1700000000);
});

test("optional fields", async () => {
  const tagged = await client().function(env("GEO"), "Encode(1, 2)", { fullResp: true, version: env("GEO_TAG") });
  assert.deepEqual([tagged.data, tagged.commit], ["1.0000|2.0000", env("GEO_COMMIT")]);
  const fresh = await client().function(env("MISC"), "Hello()", { fullResp: true, cache: false, cacheBust: true });
  assert.deepEqual([fresh.data, fresh.cache], ["hello", "miss"]);
  assert.ok((await client().function(env("NET"), "Addr(0)", { ip4: true })).startsWith(env("IP4_PREFIX")));
  for (const runtime of ["python", "node"]) {
    assert.equal(await client().function(env("BILINGUAL"), "which(1)", { runtime }), `${runtime} 1`);
  }
});

test("a build failure", async () => {
  await assert.rejects(client().function(env("BROKEN"), "Oops()"), (e) => {
    assert.deepEqual([e.status, e.message], [422, "build failed"]);
    assert.ok(typeof e.body.output === "string");
    return true;
  });
});

test("a timeout", async () => {
  await assert.rejects(client().function(env("MISC"), "Sleep(10000)"), (e) => {
    assert.equal(e.status, 504);
    assert.match(e.message, /ran longer than/);
    return true;
  });
});

test("quotes and backslashes", async () => {
  assert.equal(await client().function(env("GEO"), 'Quote("a \\"b\\" \\\\ c")'), '"a \\"b\\" \\\\ c"');
});

test("admin calls with and without the token", async () => {
  await rejects(client().jails(), 403);
  await rejects(client({ adminToken: "wrong-token" }).apiStats(), 403);
  const admin = client({ adminToken: env("ADMIN_TOKEN") });
  assert.ok(Array.isArray(await admin.jails()));
  assert.ok("uptime_seconds" in (await admin.apiStats()));
  assert.ok((await admin.ips("available")).count >= 1);
  await rejects(admin.killJail("no-such-jail"), 404);
});

test("no server", async () => {
  await rejects(new Client("127.0.0.1", 1, { timeout: 5000 }).function(env("GEO"), "Encode(1, 2)"), 0);
});

test("api keys", async () => {
  const keyed = (options) => new Client(env("HOST"), Number(env("KEYED_PORT")), options);
  await rejects(keyed().function(env("MISC"), "Hello()"), 401);
  assert.equal(await keyed({ apiKey: env("API_KEY") }).function(env("MISC"), "Hello()"), "hello");
});

test("async calls and schedules", async () => {
  const c = client({ adminToken: env("ADMIN_TOKEN") });
  const id = await c.callAsync(env("MISC"), "Hello()", { idempotencyKey: "js-client" });
  assert.equal(id.length, 32);
  assert.equal(await c.callAsync(env("MISC"), "Hello()", { idempotencyKey: "js-client" }), id);
  const done = await c.waitInvocation(id, 120000);
  assert.deepEqual([done.status, done.result.data, done.attempts.length], ["succeeded", "hello", 1]);
  const failed = await c.waitInvocation(await c.callAsync(env("MISC"), 'Panic("js")', { cache: false }), 120000);
  assert.deepEqual([failed.status, failed.http_status], ["failed", 500]);
  await assert.rejects(c.callAsync(env("MISC"), "Hello("), (e) => e instanceof SkyIslandError && e.status === 400);
  await c.addSchedule({ name: "js-client", url: env("MISC"), call: "Hello()", every: "1h" });
  assert.ok((await c.schedules()).some((s) => s.name === "js-client"));
  assert.equal((await c.pauseSchedule("js-client")).paused, true);
  await c.deleteSchedule("js-client");
  await assert.rejects(c.schedule("js-client"), (e) => e.status === 404);
});
