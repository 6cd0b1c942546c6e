# Sky Island's Python runner: calls one function of the package with the arguments the
# server parsed, and prints what it returns. argv names the package and the module (JSON);
# the module is imported first, then the call is read from stdin as JSON data, never as
# source: a pre-started runner waits there, its package imported, for its one call. Exit 87: no such module or name; 88: the package does not load (a syntax
# error); anything the function raises: its traceback and exit 1. Once the call has
# returned and the program's own exit handlers have run, it writes its exit status (0) as
# one byte to stdin (a socket): Sky Island answers then and ends the jail.
import sys

_returned = False


def report_done():
    """The last exit handler (registered first): done, if the call returned."""
    if not _returned:
        return
    import posix

    try:
        sys.stdout.flush()
        sys.stderr.flush()
        posix.write(0, b"\0")
    except (OSError, ValueError):
        pass


def fail(code, message):
    sys.stdout.flush()
    sys.stderr.write("skyisland-runner: " + message + "\n")
    sys.stderr.flush()
    sys.exit(code)


class _Context:
    # What _json's scanner reads from json.JSONDecoder.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float


def decode(text):
    """The call's JSON, with the json module's own C scanner (without importing json)."""
    import _json

    value, end = _json.make_scanner(_Context())(text, 0)
    if end != len(text):
        raise ValueError("trailing data in the call")
    return value


def encode(value):
    """Compact JSON: numbers and booleans directly, anything else with json.dumps."""
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is int or (type(value) is float and value == value and value not in (float("inf"), float("-inf"))):
        return repr(value)
    import json

    return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)


def read_call():
    """The call (`{"name":…,"args":[…]}`), all of stdin, read once."""
    import posix

    chunks = []
    while True:
        chunk = posix.read(0, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    return decode(b"".join(chunks).decode("utf-8"))


def main():
    global _returned
    # Only what every call needs: the runner's own imports are part of every call's time
    # (inspect alone costs ~14 ms; json, through re and enum, ~5 ms; os ~1 ms: posix is
    # built in).
    import atexit
    import posix

    # Exit handlers run last registered first: this one after any the package registers,
    # and after non-daemon threads have ended.
    atexit.register(report_done)
    pkg, deps, module_name = sys.argv[1], sys.argv[2], decode(sys.argv[3])
    sys.path[:0] = [pkg]
    try:
        has_deps = posix.stat(deps).st_mode & 0o170000 == 0o040000
    except OSError:
        has_deps = False
    if has_deps:
        import site

        site.addsitedir(deps)
    if module_name is None:
        # A bare name: main.py, then __init__.py, then the directory's only module.
        files = sorted(f for f in posix.listdir(pkg) if f.endswith(".py"))
        for candidate in ("main.py", "__init__.py"):
            if candidate in files:
                module_name = candidate[:-3]
                break
        else:
            if len(files) != 1:
                fail(87, "a bare name needs main.py, __init__.py or a single module in the package; "
                         "name the module: module.%s(...)" % read_call()["name"])
            module_name = files[0][:-3]
    try:
        if module_name == "__init__":
            import importlib.machinery
            import importlib.util

            loader = importlib.machinery.SourceFileLoader("__skyisland_pkg__", pkg + "/__init__.py")
            module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
            loader.exec_module(module)
        else:
            __import__(module_name)
            module = sys.modules[module_name]
    except SyntaxError as e:
        where = (e.filename or "?").rsplit("/", 1)[-1]
        fail(88, "%s: %s (%s, line %s)" % (type(e).__name__, e.msg, where, e.lineno))
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            fail(87, "no module named %r in the package" % module_name)
        raise
    spec = read_call()
    function = getattr(module, spec["name"], None)
    if function is None or spec["name"].startswith("_"):
        fail(87, "module %s has no function %s" % (module_name if module_name != "__init__" else "__init__.py",
                                                   spec["name"]))
    if not callable(function):
        fail(87, "%s is not a function" % spec["name"])
    result = function(*spec["args"])
    # A coroutine or any other awaitable (what inspect.isawaitable checks, without inspect).
    if getattr(type(result), "__await__", None) is not None:
        import asyncio

        async def wait(awaitable):
            return await awaitable

        result = asyncio.run(wait(result))
    sys.stdout.flush()
    if result is None:
        _returned = True
        return
    text = result if isinstance(result, str) else encode(result)
    sys.stdout.write(text)
    sys.stdout.flush()
    _returned = True


if __name__ == "__main__":
    main()
