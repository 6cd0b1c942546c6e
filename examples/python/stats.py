"""A Sky Island example: `stats.summary([3, 1, 2])` calls this module's function."""


def summary(xs):
    # Anything but a string or None is answered as compact JSON.
    return {"min": min(xs), "max": max(xs), "mean": sum(xs) / len(xs)}
