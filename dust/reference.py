"""The documentation site's generated pages, as a MkDocs hook (``hooks:`` in mkdocs.yml).

The REST, CLI and settings references are written from the code at build time (the OpenAPI document of
``create_app``, the Typer app's click commands, the ``Settings`` model), and the home and performance pages from
README.md, so none of them can drift from what they describe and none is kept in git. Pages are handed to MkDocs
as generated files: nothing is written into docs/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
METHODS = ("get", "post", "put", "patch", "delete")
COMPONENTS = "#/components/schemas/"
# `<!-- from README.md: A first session -->` on a line of its own: that section of the README, pasted in.
INCLUDE = re.compile(r"^<!-- from README\.md: (.+?) -->$", re.MULTILINE)
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
# The pages made at build time (``pages``), by their path under docs/; every other page of the nav is a file there.
GENERATED = ("index.md", "performance.md", "reference/rest.md", "reference/cli.md", "reference/settings.md")


def _cell(text: Any) -> str:
    """One table cell: on one line, with its pipes escaped."""
    return " ".join(str(text or "").split()).replace("|", "\\|")


def _type(schema: dict[str, Any], name: Callable[[str], str] = str) -> str:
    """A JSON schema said briefly: its $ref's name (as ``name`` writes it: a link in a field table), `list[…]`,
    `dict[str, …]`, `a | b`, its values (an enum), or its type and format."""
    if "$ref" in schema:
        return name(_component(schema))
    if "anyOf" in schema or "oneOf" in schema:
        return " | ".join(_type(s, name) for s in schema.get("anyOf", schema.get("oneOf", [])))
    if "enum" in schema or "const" in schema:
        return " | ".join(json.dumps(v) for v in schema.get("enum", [schema.get("const")]))
    if schema.get("type") == "array":
        return f"list[{_type(schema.get('items', {}), name)}]"
    if schema.get("type") == "object" and schema.get("properties") and schema.get("title"):
        return str(schema["title"])  # a model written out in place (a Cell), not a component
    if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"dict[str, {_type(schema['additionalProperties'], name)}]"
    kind = schema.get("type", "any")
    kind = " | ".join(kind) if isinstance(kind, list) else str(kind)
    return f"{kind} ({schema['format']})" if "format" in schema else kind


def _component(schema: dict[str, Any]) -> str:
    return str(schema["$ref"]).removeprefix(COMPONENTS)


def _model(schema: dict[str, Any]) -> str | None:
    """The component a body or an answer is, alone or as ``X | null``; None for anything else."""
    options = schema.get("anyOf", [schema])
    refs = [s for s in options if "$ref" in s]
    if len(refs) == 1 and all("$ref" in s or s.get("type") == "null" for s in options):
        return _component(refs[0])
    return None


class Models:
    """The component schemas the REST reference shows, each once: the fields of a body or an answer in a table
    under its operation; the models those fields name, linked to tables of their own at the end of the page."""

    def __init__(self, components: dict[str, Any], headings: set[str]) -> None:
        self.components = components
        self.headings = headings  # anchors already on the page: a model's heading must not take one of them
        self.linked: dict[str, str] = {}  # model -> its anchor, in the order first linked

    def link(self, name: str) -> str:
        if name not in self.components:
            return name
        if name not in self.linked:
            slug = _slug(name)
            self.linked[name] = slug if slug not in self.headings else _slug(f"{name} model")
        return f"[{name}](#{self.linked[name]})"

    def heading(self, name: str) -> str:
        return name if self.linked[name] == _slug(name) else f"{name} model"

    def fields(self, name: str) -> list[str]:
        """The table of a model's fields (for an enum, its values), the models they name linked."""
        schema = self.components[name]
        if "enum" in schema:
            return [f"One of {_type(schema)}."]
        properties = schema.get("properties", {})
        if not properties:
            return [f"A JSON {_type(schema, self.link)}."]
        required = set(schema.get("required", []))
        lines = ["| field | type | required | description |", "|---|---|---|---|"]
        for field, spec in properties.items():
            kind = _cell(_type(spec, self.link))
            lines.append(f"| `{field}` | {kind} | {'yes' if field in required else ''} | {_cell(_about(spec))} |")
        if isinstance(schema.get("additionalProperties"), dict):  # a cell's axis labels: any other key
            other = _type(schema["additionalProperties"], self.link)
            lines.append(f"| other keys | {_cell(other)} |  | {_cell(schema.get('description'))} |")
        return lines

    def section(self) -> list[str]:
        """The models linked from the tables, each with its fields (linking more models, listed in turn)."""
        lines = [
            "",
            "## Models of bodies and answers",
            "",
            "The models named in the field tables above, each with its own fields; a field's type links to its "
            "model here.",
        ]
        done: set[str] = set()
        while len(done) < len(self.linked):
            name = next(n for n in self.linked if n not in done)
            done.add(name)
            described = self.components[name].get("description")
            lines += ["", f"### {self.heading(name)}", ""]
            lines += [" ".join(str(described).split()), ""] if described else []
            lines += self.fields(name)
        return lines


def _about(spec: dict[str, Any]) -> str:
    """A field's description, with its bounds and default."""
    said = [str(spec.get("description") or "").strip()]
    said += [_bounds(spec)]
    if "default" in spec and spec["default"] is not None:
        said.append(f"Default `{json.dumps(spec['default'])}`.")
    return " ".join(s for s in said if s)


def _bounds(spec: dict[str, Any]) -> str:
    """The limits a field's schema sets, briefly (``1..500``, ``at most 64 characters``)."""
    for option in spec.get("anyOf", [spec]):
        low = option.get("minimum", option.get("exclusiveMinimum"))
        high = option.get("maximum", option.get("exclusiveMaximum"))
        if low is not None or high is not None:
            return f"Range {'' if low is None else low}..{'' if high is None else high}."
        if "maxLength" in option:
            return f"At most {option['maxLength']} characters."
        if "maxItems" in option:
            return f"At most {option['maxItems']} items."
    return ""


def rest(openapi: dict[str, Any]) -> str:
    """The REST reference: every operation of the OpenAPI document, grouped by its first tag."""
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in openapi["paths"].items():
        for method in (m for m in METHODS if m in item):
            operation = item[method]
            by_tag.setdefault((operation.get("tags") or ["other"])[0], []).append((method, path, operation))
    lines = [
        "# REST API reference",
        "",
        f"Generated from the OpenAPI document of DUST {openapi['info'].get('version', '')} when this site was built: "
        "every operation, grouped by tag, with its parameters, the fields of its request body and of its answer, "
        "and at the end the models those fields name. A running server serves the same document at `/openapi.json` "
        "and tries it out at `/docs`. The guide, with examples, paging, errors and limits, is "
        "[REST API guide](../api.md). Errors are `application/problem+json` (RFC 9457).",
    ]
    headings = {_slug(tag) for tag in by_tag}
    headings |= {_slug(f"{m.upper()} {p}") for operations in by_tag.values() for m, p, _ in operations}
    models = Models(openapi.get("components", {}).get("schemas", {}), headings)
    for tag in sorted(by_tag):
        lines += ["", f"## {tag}"]
        for method, path, operation in by_tag[tag]:
            lines += ["", *_operation(method, path, operation, models)]
    return "\n".join([*lines, *models.section()]) + "\n"


def _operation(method: str, path: str, operation: dict[str, Any], models: Models) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", f"**{_cell(operation.get('summary'))}**"]
    if operation.get("description"):
        lines += ["", operation["description"].strip()]
    if operation.get("parameters"):
        lines += ["", "| parameter | in | required | type | description |", "|---|---|---|---|---|"]
        for p in operation["parameters"]:
            required = "yes" if p.get("required") else ""
            schema = p.get("schema", {})
            described = _cell(p.get("description") or schema.get("description"))
            lines.append(f"| `{p['name']}` | {p['in']} | {required} | {_cell(_type(schema))} | {described} |")
    body = operation.get("requestBody")
    if body:
        kinds = [f"`{media}`: {_type(c.get('schema', {}))}" for media, c in body.get("content", {}).items()]
        lines += ["", f"Request body{' (required)' if body.get('required') else ''}: {'; '.join(kinds)}"]
        for name in dict.fromkeys(_model(c.get("schema", {})) for c in body.get("content", {}).values()):
            lines += ["", *models.fields(name)] if name in models.components else []
    lines += ["", "| status | answer |", "|---|---|"]
    for status, answer in sorted(operation.get("responses", {}).items()):
        schemas = [_type(c["schema"]) for c in answer.get("content", {}).values() if "schema" in c]
        shape = f" ({', '.join(dict.fromkeys(schemas))})" if schemas else ""
        lines.append(f"| {status} | {_cell(str(answer.get('description', '')) + shape)} |")
    return lines + _answers(operation, models)


def _answers(operation: dict[str, Any], models: Models) -> list[str]:
    """The fields of each model a success answers with (of its items, for a list), once per model."""
    shown: dict[str, list[str]] = {}
    for status, answer in sorted(operation.get("responses", {}).items()):
        for content in answer.get("content", {}).values() if status.startswith("2") else []:
            schema = content.get("schema") or {}
            many = schema.get("type") == "array"
            name = _model(schema.get("items", {}) if many else schema)
            if name in models.components:
                shown.setdefault(f"{'a list of ' if many else ''}`{name}`", []).append(status)
    lines = []
    for what, statuses in shown.items():
        name = what.split("`")[1]
        lines += ["", f"Answer ({', '.join(dict.fromkeys(statuses))}): {what}", "", *models.fields(name)]
    return lines


# Typer vendors its own click (typer._click), whose classes are private: commands are read by their attributes.
def commands(command: Any, path: str = "dust") -> Iterator[tuple[str, Any]]:
    """Every command under ``command`` with its full name (``dust users create``), groups before their commands."""
    if getattr(command, "hidden", False):
        return
    yield path, command
    if hasattr(command, "list_commands"):
        ctx = command.context_class(command, info_name=path)
        for name in command.list_commands(ctx):
            yield from commands(command.get_command(ctx, name), f"{path} {name}")


def cli(root: Any) -> str:
    """The CLI reference: each command's help, usage, arguments and options."""
    lines = [
        "# CLI reference",
        "",
        "Generated from the `dust` command (Typer) when this site was built; `dust COMMAND --help` says the same. "
        "Settings come from the environment ([settings](settings.md)); plugins may add commands "
        "([plugins](../plugins.md)).",
    ]
    for path, command in commands(root):
        lines += ["", *_command(path, command)]
    return "\n".join(lines) + "\n"


def _command(path: str, command: Any) -> list[str]:
    usage = " ".join([path, *_usage(command)])
    lines = [f"## {path}", "", (command.help or "").strip(), "", f"Usage: `{usage}`"]
    shown = [p for p in command.params if not getattr(p, "hidden", False)]
    if shown:
        lines += ["", "| argument or option | default | description |", "|---|---|---|"]
        for param in shown:
            lines.append(f"| {_cell(_param_name(param))} | {_cell(_default(param))} | {_cell(_help(param))} |")
    return lines


def _usage(command: Any) -> list[str]:
    """``[OPTIONS] NAME [PATH]...`` as click says it (its own usage needs a live context of typer's click)."""
    pieces = ["[OPTIONS]"] if any(p.param_type_name == "option" for p in command.params) else []
    for param in (p for p in command.params if p.param_type_name == "argument"):
        name = _metavar(param) + ("..." if param.nargs == -1 else "")
        pieces.append(name if param.required else f"[{name}]")
    return pieces + (["COMMAND [ARGS]..."] if hasattr(command, "list_commands") else [])


def _metavar(param: Any) -> str:
    return str(param.metavar or param.name.upper())


def _param_name(param: Any) -> str:
    if param.param_type_name == "option":
        names = " / ".join(", ".join(f"`{o}`" for o in opts) for opts in (param.opts, param.secondary_opts) if opts)
        return names + (" (required)" if param.required else "")
    return f"`{_metavar(param)}`" + ("" if param.required else " (optional)")


def _default(param: Any) -> str:
    default = param.default
    if callable(default) or default is None or (getattr(param, "is_flag", False) and not default):
        return ""
    return f"`{default}`"


def _help(param: Any) -> str:
    return str(getattr(param, "help", None) or "")


def settings() -> str:
    """The settings page: each field of ``Settings`` with its environment variable, default and description."""
    from dust.core.config import Settings

    lines = [
        "# Settings",
        "",
        "Generated from `dust.core.config.Settings` when this site was built. Every setting is read from the "
        "environment variable `DUST_<NAME>` or from a `.env` file in the working directory; lists are given as "
        "JSON (`DUST_CORS_ORIGINS='[\"https://app.example\"]'`). [Security](../security.md) and "
        "[deployment](../deploy.md) say which to set off a laptop.",
        "",
        "| variable | type | default | description |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "" if default is None else f"`{json.dumps(default, default=str)}`"
        kind = str(field.annotation).replace("typing.", "").replace("pydantic.types.", "")
        lines.append(f"| `DUST_{name.upper()}` | {_cell(kind)} | {_cell(shown)} | {_cell(field.description)} |")
    return "\n".join(lines) + "\n"


def readme_section(title: str, readme: str, promote: bool = False) -> str:
    """One `## title` section of the README (to the next `## `), its links made to work from docs/: `docs/x.md`
    becomes `x.md`, a link to another file of the repository becomes its path, a link to a README heading
    outside the section its text. ``promote`` raises its headings one level, for a page of its own."""
    lines = readme.splitlines()
    start = lines.index(f"## {title}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    section, fenced = [], False
    for line in lines[start:end]:
        fenced ^= line.startswith("```")
        section.append(line[1:] if promote and not fenced and re.match(r"##+ ", line) else line)
    return _links("\n".join(section)) + "\n"


def _links(text: str) -> str:
    """README links made to work from docs/ (see ``readme_section``)."""
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
    return LINK.sub(lambda m: _link(m, anchors), text)


def _slug(heading: str) -> str:
    """The anchor of a heading, as GitHub and the site's toc (pymdownx.slugs, mkdocs.yml) make it."""
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower())


def _link(match: re.Match[str], anchors: set[str]) -> str:
    bang, text, target = match.groups()
    if target.startswith(("http://", "https://")) or target.removeprefix("#") in anchors:
        return match[0]
    if target.startswith("docs/"):
        return f"{bang}[{text}]({target.removeprefix('docs/')})"
    if target.startswith("#"):
        return text
    return _in_repository(text, target)


def _in_repository(text: str, target: str) -> str:
    path = target.partition("#")[0]
    return f"`{path}`" if text.strip("`") == path else f"{text} (`{path}` in the repository)"


def home(readme: str) -> str:
    """The home page: the README's opening and what DUST gives, then where to go next."""
    opening = _links(readme[: readme.index("\n## ")].strip())
    return (
        f"{opening}\n\nNew here? The [quickstart](quickstart.md) takes five minutes, then the "
        f"[concepts](concepts.md).\n\n{readme_section('What you get', readme)}"
    )


def performance(readme: str) -> str:
    """The performance page: the README's measured figures, as measured."""
    return readme_section("Performance", readme, promote=True)


def pages() -> dict[str, str]:
    """Every generated page by its path under docs/."""
    import typer

    from dust.api.app import create_app
    from dust.cli import app as dust_cli
    from dust.core.config import Settings

    readme = README.read_text()
    # A throwaway app for its OpenAPI document: an in-memory database that is never migrated nor touched.
    app = create_app(Settings(database_url="sqlite:///:memory:", secret_key="docs-build-" + "x" * 32), migrate=False)
    made = (home(readme), performance(readme), rest(app.openapi()), cli(typer.main.get_command(dust_cli)), settings())
    return dict(zip(GENERATED, made, strict=True))


# MkDocs hook events (https://www.mkdocs.org/user-guide/configuration/#hooks)


def on_files(files: Any, config: Any) -> Any:
    """Hand MkDocs the generated pages as if they were in docs/."""
    from mkdocs.structure.files import File

    for path, content in pages().items():
        files.append(File.generated(config, path, content=content))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Paste in the README sections a page names with `<!-- from README.md: Title -->`; a link of docs/ to a file
    of the repository outside docs/ (`../bench/README.md`, right on GitHub) becomes its path, as the site has no
    such page."""
    readme = README.read_text()
    markdown = INCLUDE.sub(lambda m: readme_section(m[1], readme), markdown)
    return LINK.sub(lambda m: _outside(m) if m[3].startswith("../") else m[0], markdown)


def _outside(match: re.Match[str]) -> str:
    return _in_repository(match[2], match[3].removeprefix("../"))
