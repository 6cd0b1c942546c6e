"""Client of Sky Island, a Function-as-a-Service platform that runs functions of Go
packages from git repositories in fresh jails.

It keeps the original client's shape, so existing callers only change the address::

    client = Client("demo.skyisland.io", 3280)
    data = client.function("github.com/mmcloughlin/geohash", "Encode(100.1, 80.9)")

``function`` returns what the function printed, or with ``full_resp=True`` the whole
answer as a dict. Keyword arguments pass the optional fields (``version``,
``cache_bust``, ``ip4``, ``cache``). Errors raise :class:`SkyIslandError` with the
server's status and message. The admin calls need ``admin_token``.
"""

import json
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["Client", "SkyIslandError"]
__version__ = "0.1.0"


class SkyIslandError(Exception):
    """An answer other than 2xx (``status`` is its HTTP status), or no answer at all
    (``status`` is 0). ``body`` is the server's JSON body, which may hold more fields,
    e.g. ``output`` for a build failure or ``stderr`` for a failing function."""

    def __init__(self, status, message, body=None, retry_after=None):
        super().__init__("{}: {}".format(status, message))
        self.status = status
        self.message = message
        self.body = body or {}
        self.retry_after = retry_after


class Client:
    """A client of one server. ``host`` may carry a scheme (``https://…``); without one,
    ``http`` is used."""

    def __init__(self, host, port, timeout=60, admin_token=None, api_key=None,
                 admin_header="X-Sky-Island-Token"):
        if "://" not in host:
            host = "http://" + host
        self.endpoint = "{}:{}".format(host.rstrip("/"), port)
        self.timeout = timeout
        self.admin_token = admin_token
        self.api_key = api_key
        self.admin_header = admin_header

    def function(self, url, call, full_resp=False, version=None, cache_bust=False, ip4=False, cache=None,
                 runtime=None):
        """Runs ``call`` (e.g. ``'Encode(1, 2)'``) of the package at import path ``url``;
        ``runtime`` ("go", "python", "node", "lua") when the server should not detect it."""
        body = {"url": url, "call": call}
        if runtime is not None:
            body["runtime"] = runtime
        if version is not None:
            body["version"] = version
        if cache_bust:
            body["cache_bust"] = True
        if ip4:
            body["ip4"] = True
        if cache is not None:
            body["cache"] = bool(cache)
        headers = {}
        if self.api_key:
            headers["Authorization"] = "Bearer " + self.api_key
        answer = self._request("POST", "/api/v1/function", body, headers)
        return answer if full_resp else answer["data"]

    # Asynchronous calls and schedules.

    def call_async(self, url, call, callback_url=None, idempotency_key=None, **fields):
        """Submits a call to run in the background; returns its invocation id at once.
        ``fields`` are the optional fields of :meth:`function` (``version``, ``cache``, …)."""
        body = {"url": url, "call": call, "async": True}
        body.update({k: v for k, v in fields.items() if v is not None})
        if callback_url is not None:
            body["callback_url"] = callback_url
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return self._request("POST", "/api/v1/function", body, self._key_headers())["id"]

    def invocation(self, invocation_id):
        """The invocation: ``status`` (queued, running, succeeded, failed), ``attempts``,
        and once finished ``http_status`` and ``result`` (or ``error``)."""
        path = "/api/v1/invocations/" + urllib.parse.quote(invocation_id, safe="")
        return self._request("GET", path, None, self._key_headers())

    def wait_invocation(self, invocation_id, timeout=600):
        """Polls until the invocation has finished (at most ``timeout`` seconds); returns it."""
        deadline = time.monotonic() + timeout
        pause = 0.05
        while True:
            invocation = self.invocation(invocation_id)
            if invocation["status"] in ("succeeded", "failed"):
                return invocation
            if time.monotonic() + pause > deadline:
                raise SkyIslandError(0, "invocation {} did not finish within {} s".format(invocation_id, timeout))
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def add_schedule(self, name, url, call, cron=None, every=None, **fields):
        """A call the server makes on a schedule: ``cron`` (with ``timezone``) or ``every``."""
        body = {"name": name, "url": url, "call": call}
        for key, value in dict(fields, cron=cron, every=every).items():
            if value is not None:
                body[key] = value
        return self._admin("POST", "/api/v1/schedules", body)

    def schedules(self):
        return self._admin("GET", "/api/v1/schedules")["items"]

    def schedule(self, name):
        return self._admin("GET", "/api/v1/schedules/" + urllib.parse.quote(name, safe=""))

    def pause_schedule(self, name, paused=True):
        return self._admin("PUT", "/api/v1/schedules/" + urllib.parse.quote(name, safe=""), {"paused": paused})

    def delete_schedule(self, name):
        self._admin("DELETE", "/api/v1/schedules/" + urllib.parse.quote(name, safe=""))

    def _key_headers(self):
        return {"Authorization": "Bearer " + self.api_key} if self.api_key else {}

    # The admin endpoints.

    def jails(self):
        return self._admin("GET", "/api/v1/admin/jails")["jails"]

    def jail(self, jail_id):
        return self._admin("GET", "/api/v1/admin/jail/" + urllib.parse.quote(jail_id, safe=""))

    def kill_jail(self, jail_id):
        return self._admin("DELETE", "/api/v1/admin/jail/" + urllib.parse.quote(jail_id, safe=""))

    def kill_jails(self):
        return self._admin("DELETE", "/api/v1/admin/jails")

    def ips(self, state=None):
        path = "/api/v1/admin/ips"
        if state is not None:
            path += "?" + urllib.parse.urlencode({"state": state})
        return self._admin("GET", path)

    def set_ip(self, ip, state):
        return self._admin("PUT", "/api/v1/admin/ips", {"ip": ip, "state": state})

    def api_stats(self):
        return self._admin("GET", "/api/v1/admin/api-stats")

    def _admin(self, method, path, body=None):
        headers = {self.admin_header: self.admin_token} if self.admin_token else {}
        return self._request(method, path, body, headers)

    def _request(self, method, path, body, headers):
        data = None
        headers = dict(headers, Accept="application/json")
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.endpoint + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode("utf-8")
                return json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = {}
            message = parsed.get("error", text.strip()) if isinstance(parsed, dict) else text.strip()
            retry = e.headers.get("Retry-After")
            raise SkyIslandError(e.code, message, parsed if isinstance(parsed, dict) else {},
                                 int(retry) if retry and retry.isdigit() else None) from None
        except (urllib.error.URLError, OSError) as e:
            raise SkyIslandError(0, "no answer from {}: {}".format(self.endpoint, getattr(e, "reason", e))) from None
