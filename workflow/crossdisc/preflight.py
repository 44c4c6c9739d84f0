"""Checks before any job runs, for what no job can fetch: a source's `file://` files, which the user
supplies (a pre-training corpus, data whose host offers no plain download). Finding one missing
after hours of downloads and training would waste them; finding it before costs a stat per file."""

from pathlib import Path
from urllib.parse import unquote, urlsplit


def local_path(url):
    """The path of a `file://` URL, else None."""
    parts = urlsplit(url)
    return Path(unquote(parts.path)) if parts.scheme == "file" else None


def local_files(spec):
    """The local (`file://`) files of a source spec, in the config's order."""
    return [path for entry in spec.get("files", []) if (path := local_path(entry["url"])) is not None]


def missing_local_files(sources, names):
    """One line per missing `file://` file of the named sources, naming the config key, the path
    and, where the source has one, its `hint` (what to fetch and where to put it)."""
    problems = []
    for name in sorted(names):
        spec = sources[name]
        for i, entry in enumerate(spec.get("files", [])):
            path = local_path(entry["url"])
            if path is None or path.exists():
                continue
            hint = f": {spec['hint']}" if spec.get("hint") else ""
            problems.append(f"config: sources.{name}.files[{i}].url: {path} does not exist{hint}")
    return problems
