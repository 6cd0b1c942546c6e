"""Runs against a real server started by Sky Island's test suite
(crates/skyisland/tests/clients.rs), which passes its address and fixtures in
SKYISLAND_TEST_* variables."""

import os
import unittest

from skyisland import Client, SkyIslandError


def env(name):
    value = os.environ.get("SKYISLAND_TEST_" + name)
    if not value:
        raise RuntimeError("SKYISLAND_TEST_%s is not set: run these tests through cargo test --test clients" % name)
    return value


def client(**kwargs):
    host = env("HOST").replace("http://", "")  # the original's callers pass a bare host
    return Client(host, int(env("PORT")), **kwargs)


class ClientTest(unittest.TestCase):
    def test_api_keys(self):
        def keyed(**kwargs):
            return Client(env("HOST").replace("http://", ""), int(env("KEYED_PORT")), **kwargs)

        with self.assertRaises(SkyIslandError) as refused:
            keyed().function(env("MISC"), "Hello()")
        self.assertEqual(refused.exception.status, 401)
        self.assertEqual(keyed(api_key=env("API_KEY")).function(env("MISC"), "Hello()"), "hello")

    def test_the_original_shape(self):
        self.assertEqual(client().function(env("GEO"), "Encode(57.64911, 10.40744)"), "57.6491|10.4074")
        answer = client().function(env("GEO"), "Encode(57.64911, 10.40744)", full_resp=True)
        self.assertEqual(answer["data"], "57.6491|10.4074")
        self.assertGreater(answer["timestamp"], 1700000000)

    def test_optional_fields(self):
        answer = client().function(env("GEO"), "Encode(1, 2)", full_resp=True, version=env("GEO_TAG"))
        self.assertEqual((answer["data"], answer["commit"]), ("1.0000|2.0000", env("GEO_COMMIT")))
        answer = client().function(env("MISC"), "Hello()", full_resp=True, cache=False, cache_bust=True)
        self.assertEqual((answer["data"], answer["cache"]), ("hello", "miss"))
        self.assertTrue(client().function(env("NET"), "Addr(0)", ip4=True).startswith(env("IP4_PREFIX")))
        for runtime in ("python", "node"):
            self.assertEqual(client().function(env("BILINGUAL"), "which(1)", runtime=runtime), runtime + " 1")

    def test_build_failure(self):
        with self.assertRaises(SkyIslandError) as caught:
            client().function(env("BROKEN"), "Oops()")
        self.assertEqual((caught.exception.status, caught.exception.message), (422, "build failed"))
        self.assertIn("output", caught.exception.body)

    def test_timeout(self):
        with self.assertRaises(SkyIslandError) as caught:
            client().function(env("MISC"), "Sleep(10000)")
        self.assertEqual(caught.exception.status, 504)
        self.assertIn("ran longer than", caught.exception.message)

    def test_quotes_and_backslashes(self):
        self.assertEqual(client().function(env("GEO"), 'Quote("a \\"b\\" \\\\ c")'), '"a \\"b\\" \\\\ c"')

    def test_admin(self):
        with self.assertRaises(SkyIslandError) as caught:
            client().jails()
        self.assertEqual(caught.exception.status, 403)
        with self.assertRaises(SkyIslandError) as caught:
            client(admin_token="wrong-token").api_stats()
        self.assertEqual(caught.exception.status, 403)
        admin = client(admin_token=env("ADMIN_TOKEN"))
        self.assertIsInstance(admin.jails(), list)
        self.assertIn("uptime_seconds", admin.api_stats())
        self.assertGreaterEqual(admin.ips(state="available")["count"], 1)
        with self.assertRaises(SkyIslandError) as caught:
            admin.kill_jail("no-such-jail")
        self.assertEqual(caught.exception.status, 404)

    def test_async_calls_and_schedules(self):
        c = client(admin_token=env("ADMIN_TOKEN"))
        first = c.call_async(env("MISC"), "Hello()", idempotency_key="python-client")
        self.assertEqual(len(first), 32)
        self.assertEqual(c.call_async(env("MISC"), "Hello()", idempotency_key="python-client"), first)
        done = c.wait_invocation(first, timeout=120)
        self.assertEqual((done["status"], done["result"]["data"], len(done["attempts"])), ("succeeded", "hello", 1))
        failed = c.wait_invocation(c.call_async(env("MISC"), 'Panic("py")', cache=False), timeout=120)
        self.assertEqual((failed["status"], failed["http_status"]), ("failed", 500))
        with self.assertRaises(SkyIslandError) as caught:
            c.call_async(env("MISC"), "Hello(")
        self.assertEqual(caught.exception.status, 400)
        c.add_schedule("python-client", env("MISC"), "Hello()", every="1h")
        self.assertIn("python-client", [s["name"] for s in c.schedules()])
        self.assertTrue(c.pause_schedule("python-client")["paused"])
        c.delete_schedule("python-client")
        with self.assertRaises(SkyIslandError) as caught:
            c.schedule("python-client")
        self.assertEqual(caught.exception.status, 404)

    def test_no_server(self):
        with self.assertRaises(SkyIslandError) as caught:
            Client("127.0.0.1", 1, timeout=5).function(env("GEO"), "Encode(1, 2)")
        self.assertEqual(caught.exception.status, 0)


if __name__ == "__main__":
    unittest.main()
