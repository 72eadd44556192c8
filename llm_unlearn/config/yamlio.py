"""Reading YAML that other people wrote (recipes, TOFU recipes, anchor dictionaries, suite files).

Rules:

Y1. No aliases (``*name``): an alias is refused where it is met, before anything is built, so a small file cannot
    expand into billions of nodes (the "billion laughs" alias bomb) and no error message prints an expanded value.
    Anchors (``&name``) alone are harmless and accepted.
Y2. No duplicate keys in a mapping: the YAML specification forbids them, and PyYAML would keep the last one silently,
    so a recipe would not do what one of its two lines says.
Y3. Only the plain data of ``yaml.safe_load`` (no Python objects); a file must be UTF-8.
"""

from __future__ import annotations

from pathlib import Path

import yaml


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (Y1) and duplicate keys (Y2)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"the alias *{event.anchor} is not allowed here (aliases are refused: write the value "
                            "out in full)", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: PyYAML's own error follows
                    continue
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"the key {key!r} appears twice (first {first.start_mark.line + 1}:"
                        f"{first.start_mark.column + 1}); keep one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str):
    """Parse ``text`` like ``yaml.safe_load``, refusing aliases and duplicate keys (rules Y1, Y2); raises
    ``yaml.YAMLError`` as ``safe_load`` does."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_file(path: str | Path, error: type[Exception], what: str = "file"):
    """Parse a YAML file (rules Y1-Y3); ``error`` with the file named when it is not UTF-8 or not valid YAML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: the {what} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") \
            from exc
    except IsADirectoryError as exc:
        raise error(f"{path} is a folder, not a {what} (a YAML file)") from exc
    except OSError as exc:
        raise error(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc
