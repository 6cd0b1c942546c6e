"""A Sky Island example: a bare name calls main.py's function."""


def greet(name):
    # A string is answered as it is.
    return f"Hello, {name}!"
