# Sky Island's Python runner: calls one function of the package with the arguments the
# server parsed, and prints what it returns. The call arrives as JSON data (argv), never
# as source. Exit 87: no such module or name; 88: the package does not load (a syntax
# error); anything the function raises: its traceback and exit 1.
import sys


def fail(code, message):
    sys.stdout.flush()
    sys.stderr.write("skyisland-runner: " + message + "\n")
    sys.stderr.flush()
    sys.exit(code)


def main():
    import importlib
    import inspect
    import json
    import os
    import traceback

    pkg, deps, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    sys.path[:0] = [pkg]
    if os.path.isdir(deps):
        import site

        site.addsitedir(deps)
    module_name = spec["module"]
    if module_name is None:
        # A bare name: main.py, then __init__.py, then the directory's only module.
        files = sorted(f for f in os.listdir(pkg) if f.endswith(".py"))
        for candidate in ("main.py", "__init__.py"):
            if candidate in files:
                module_name = candidate[:-3]
                break
        else:
            if len(files) != 1:
                fail(87, "a bare name needs main.py, __init__.py or a single module in the package; "
                         "name the module: module.%s(...)" % spec["name"])
            module_name = files[0][:-3]
    try:
        if module_name == "__init__":
            loader = importlib.machinery.SourceFileLoader("__skyisland_pkg__", os.path.join(pkg, "__init__.py"))
            module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
            loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except SyntaxError as e:
        fail(88, "%s: %s (%s, line %s)" % (type(e).__name__, e.msg, os.path.basename(e.filename or "?"), e.lineno))
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            fail(87, "no module named %r in the package" % module_name)
        raise
    function = getattr(module, spec["name"], None)
    if function is None or spec["name"].startswith("_"):
        fail(87, "module %s has no function %s" % (module_name if module_name != "__init__" else "__init__.py",
                                                   spec["name"]))
    if not callable(function):
        fail(87, "%s is not a function" % spec["name"])
    result = function(*spec["args"])
    if inspect.isawaitable(result):
        import asyncio

        async def wait(awaitable):
            return await awaitable

        result = asyncio.run(wait(result))
    sys.stdout.flush()
    if result is None:
        return
    if isinstance(result, str):
        text = result
    else:
        text = json.dumps(result, default=str, separators=(",", ":"), ensure_ascii=False)
    sys.stdout.write(text)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
