"""The strict subset of the Dockerfile syntax that images/build.py understands (see
`parse_dockerfile`); anything else is refused with the file and line."""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .report import ImageBuildError
from .repository import copy_target, display
from .spec import DEFAULT_PATH, LABEL_TITLE, BaseImage, Copy, ImageSpec, Run, Stage


class DockerfileError(ImageBuildError):
    """The Dockerfile uses something outside the subset images/build.py understands."""

    def __init__(self, path: Path, line: int, message: str) -> None:
        super().__init__(f"{display(path)}:{line}: {message}")


@dataclass(frozen=True)
class _Instruction:
    line: int
    keyword: str
    arguments: str


_KEYWORD = re.compile(r"([A-Za-z]+)(?:\s+(.*))?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")
_BASE = re.compile(
    r"(?:docker\.io/library/)?debian:(?P<release>[a-z]+)-(?P<date>\d{8})-slim@sha256:(?P<digest>[0-9a-f]{64})"
)
_APT_RUN = re.compile(
    r"apt-get update && apt-get install --yes --no-install-recommends"
    r" (?P<packages>[a-z0-9][a-z0-9.+-]*(?: [a-z0-9][a-z0-9.+-]*)*) && rm -rf /var/lib/apt/lists/\*"
)
_PIP_TARGET = re.compile(r"'(?P<distribution>[A-Za-z0-9._-]+)\[(?P<extras>[a-z0-9_,-]+)\]'")
_REQUIREMENT = re.compile(r"--requirement=(?P<path>\S+)")
_USER = re.compile(r"\d+(?::\d+)?")
TWO_STAGES = "expected two stages: FROM <image> AS <name> (the build stage), then FROM <image> (the image)"
_STAGE_KEYWORDS = {
    "build": frozenset({"RUN", "COPY", "WORKDIR", "ENV", "ARG"}),
    "final": frozenset({"RUN", "COPY", "WORKDIR", "ENV", "ARG", "USER", "LABEL", "ENTRYPOINT"}),
}


def _instructions(path: Path, text: str) -> list[_Instruction]:
    """Instructions with their first line number; comment lines and `\\` continuations as Docker
    reads them (comments inside a continued instruction are dropped)."""
    found: list[_Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and (not stripped or stripped.lstrip().startswith("#")):
            continue
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        joined = "".join(pending).strip()
        pending = []
        match = _KEYWORD.fullmatch(joined)
        if match is None:
            raise DockerfileError(path, start, f"not an instruction: {joined[:60]!r}")
        found.append(_Instruction(start, match.group(1), (match.group(2) or "").strip()))
    if pending:
        raise DockerfileError(path, start, "the file ends inside a continued instruction")
    return found


def _substitute(path: Path, line: int, text: str, variables: Mapping[str, str | None]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        if name not in variables:
            raise DockerfileError(path, line, f"${name} is not an ARG or ENV of this stage")
        found = variables[name]
        if found is None:
            raise DockerfileError(path, line, f"ARG {name} has no default and no value was given")
        return found

    result = _VARIABLE.sub(value, text)
    if "$" in _VARIABLE.sub("", text):
        raise DockerfileError(
            path, line, f"unsupported variable syntax in {text!r} (only $NAME and ${{NAME}})"
        )
    return result


def _pairs(
    path: Path, line: int, arguments: str, variables: Mapping[str, str | None]
) -> list[tuple[str, str]]:
    """`KEY=value KEY2="quoted value" ...` (ENV and LABEL; the legacy `ENV KEY value` is refused)."""
    if "'" in arguments:
        raise DockerfileError(path, line, "single quotes are not supported here; use double quotes")
    try:
        tokens = shlex.split(arguments, posix=True)
    except ValueError as exc:
        raise DockerfileError(path, line, f"cannot split {arguments!r}: {exc}") from exc
    pairs: list[tuple[str, str]] = []
    for token in tokens:
        key, sep, raw = token.partition("=")
        if not sep or not key:
            raise DockerfileError(path, line, f"expected KEY=value, got {token!r}")
        pairs.append((key, _substitute(path, line, raw, variables)))
    if not pairs:
        raise DockerfileError(path, line, "expected at least one KEY=value")
    return pairs


def _base_image(path: Path, line: int, reference: str) -> BaseImage:
    match = _BASE.fullmatch(reference)
    if match is None:
        raise DockerfileError(
            path,
            line,
            f"FROM {reference!r}: expected debian:<release>-<YYYYMMDD>-slim@sha256:<digest> "
            "(a dated Debian slim tag pinned by digest)",
        )
    date = dt.datetime.strptime(match.group("date"), "%Y%m%d").replace(tzinfo=dt.UTC)
    return BaseImage(reference, match.group("release"), int(date.timestamp()), match.group("digest"))


def _absolute(path: Path, line: int, value: str, workdir: str) -> str:
    if "$" in value or "*" in value or "?" in value or "[" in value:
        raise DockerfileError(path, line, f"{value!r}: variables and wildcards are not supported in paths")
    joined = PurePosixPath(workdir, value)
    if ".." in joined.parts:
        raise DockerfileError(path, line, f"{value!r}: '..' is not supported")
    text = str(joined)
    return text + "/" if value.endswith("/") and text != "/" else text


@dataclass
class _StageBuilder:
    name: str | None
    base: BaseImage
    line: int
    apt_packages: tuple[str, ...] | None = None
    workdir: str = "/"
    user: str | None = None
    entrypoint: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.env: dict[str, str] = {"PATH": DEFAULT_PATH}
        self.args: dict[str, str | None] = {}
        self.labels: dict[str, str] = {}
        self.steps: list[Run | Copy] = []

    def variables(self) -> dict[str, str | None]:
        return {**self.args, **self.env}

    def run_env(self) -> tuple[tuple[str, str], ...]:
        values = {k: v for k, v in self.args.items() if v is not None}
        values.update(self.env)
        return tuple(values.items())

    def stage(self, path: Path) -> Stage:
        if self.apt_packages is None:
            raise DockerfileError(path, self.line, "the stage installs no Debian packages")
        return Stage(
            self.name, self.base, self.apt_packages, tuple(self.steps), self.workdir, tuple(self.env.items())
        )


def parse_dockerfile(path: Path, build_args: Mapping[str, str] | None = None) -> ImageSpec:
    """The image `path` defines. The subset: two stages, `FROM <debian slim@digest> AS <name>` and
    the final `FROM <debian slim@digest>`; each starts with the one `RUN apt-get update && apt-get
    install --yes --no-install-recommends <packages> && rm -rf /var/lib/apt/lists/*`. Then the build
    stage has WORKDIR, ENV, ARG, COPY <repository paths> <dest> (before its other RUN lines) and RUN;
    the final stage has `COPY --from=<build stage> <dir> <dir>`, RUN (before USER), ENV, ARG, USER
    <uid>[:<gid>], WORKDIR, LABEL, and ENTRYPOINT in JSON form. ENV/LABEL take KEY=value pairs;
    $NAME and ${NAME} are replaced in ENV, LABEL, USER and WORKDIR (not in RUN: the shell does that).
    `build_args` gives ARG values, as `--build-arg` does."""
    given = dict(build_args or {})
    text = path.read_text()
    stages: list[_StageBuilder] = []
    current: _StageBuilder | None = None
    for ins in _instructions(path, text):
        if ins.keyword != ins.keyword.upper():
            raise DockerfileError(
                path, ins.line, f"write the instruction in upper case: {ins.keyword.upper()}"
            )
        if ins.keyword == "FROM":
            words = ins.arguments.split()
            if len(words) == 3 and words[1].lower() == "as" and _NAME.fullmatch(words[2]):
                name: str | None = words[2]
            elif len(words) == 1:
                name = None
            else:
                raise DockerfileError(path, ins.line, "expected FROM <image> [AS <name>] (no flags)")
            if (name is None) != bool(stages) or len(stages) == 2:
                raise DockerfileError(path, ins.line, TWO_STAGES)
            current = _StageBuilder(name, _base_image(path, ins.line, words[0]), ins.line)
            stages.append(current)
            continue
        if current is None:
            raise DockerfileError(path, ins.line, f"{ins.keyword} before the first FROM is not supported")
        kind = "build" if len(stages) == 1 else "final"
        if ins.keyword not in _STAGE_KEYWORDS[kind]:
            raise DockerfileError(path, ins.line, f"{ins.keyword} is not supported in the {kind} stage")
        if current.apt_packages is None:
            apt = _APT_RUN.fullmatch(" ".join(ins.arguments.split())) if ins.keyword == "RUN" else None
            if apt is None:
                raise DockerfileError(
                    path,
                    ins.line,
                    "each stage must start with RUN apt-get update && apt-get install --yes "
                    "--no-install-recommends <packages> && rm -rf /var/lib/apt/lists/*",
                )
            packages = apt.group("packages").split()
            if len(set(packages)) != len(packages):
                raise DockerfileError(path, ins.line, "a package is listed twice")
            current.apt_packages = tuple(sorted(packages))
            continue
        _stage_instruction(path, ins, current, kind, given)
    if len(stages) != 2:
        raise DockerfileError(path, 1, TWO_STAGES)
    build, final = stages[0].stage(path), stages[1].stage(path)
    if build.base.release != final.base.release:
        raise DockerfileError(path, stages[1].line, "both stages must use the same Debian release")
    return _spec(path, build, stages[1])


def _stage_instruction(
    path: Path, ins: _Instruction, current: _StageBuilder, kind: str, given: Mapping[str, str]
) -> None:
    if ins.keyword == "RUN":
        if ins.arguments.startswith("--") or ins.arguments.startswith("["):
            raise DockerfileError(path, ins.line, "only the shell form of RUN, without flags, is supported")
        if "<<" in ins.arguments:
            raise DockerfileError(path, ins.line, "heredocs are not supported")
        if current.user is not None:
            raise DockerfileError(path, ins.line, "RUN after USER is not supported")
        current.steps.append(Run(ins.line, ins.arguments, current.run_env(), current.workdir))
    elif ins.keyword == "COPY":
        words = ins.arguments.split()
        source_stage = None
        if words and words[0].startswith("--from="):
            source_stage = words.pop(0).removeprefix("--from=")
        if any(w.startswith("--") for w in words) or len(words) < 2:
            raise DockerfileError(path, ins.line, "expected COPY [--from=<stage>] <source>... <dest>")
        *sources, dest = words
        if kind == "final" and source_stage is None:
            raise DockerfileError(
                path, ins.line, "the final stage copies only from the build stage (COPY --from=)"
            )
        if kind == "build" and source_stage is not None:
            raise DockerfileError(path, ins.line, "the build stage copies only from the repository")
        if kind == "build" and any(isinstance(s, Run) for s in current.steps):
            raise DockerfileError(path, ins.line, "in the build stage, every COPY comes before the RUN lines")
        if len(sources) > 1 and not dest.endswith("/"):
            raise DockerfileError(path, ins.line, "with several sources the destination must end with /")
        for source in sources:
            if source_stage is None and (source.startswith("/") or ".." in PurePosixPath(source).parts):
                raise DockerfileError(path, ins.line, f"{source!r}: a path inside the repository is expected")
            if source_stage is not None and not source.startswith("/"):
                raise DockerfileError(
                    path, ins.line, f"{source!r}: an absolute path in the stage is expected"
                )
            _absolute(path, ins.line, source, "/")
        current.steps.append(
            Copy(ins.line, tuple(sources), _absolute(path, ins.line, dest, current.workdir), source_stage)
        )
    elif ins.keyword == "WORKDIR":
        value = _substitute(path, ins.line, ins.arguments, current.variables())
        if not value or len(value.split()) != 1:
            raise DockerfileError(path, ins.line, "expected WORKDIR <path>")
        current.workdir = _absolute(path, ins.line, value, current.workdir).rstrip("/") or "/"
    elif ins.keyword == "ENV":
        for key, value in _pairs(path, ins.line, ins.arguments, current.variables()):
            current.env[key] = value
    elif ins.keyword == "ARG":
        name, sep, default = ins.arguments.partition("=")
        if not _NAME.fullmatch(name) or " " in default or "'" in default:
            raise DockerfileError(path, ins.line, "expected ARG NAME or ARG NAME=value (one per line)")
        current.args[name] = given.get(name, default.strip('"') if sep else None)
    elif ins.keyword == "USER":
        value = _substitute(path, ins.line, ins.arguments, current.variables())
        if not _USER.fullmatch(value):
            raise DockerfileError(path, ins.line, "expected USER <uid>[:<gid>] (numeric, for runAsNonRoot)")
        current.user = value
    elif ins.keyword == "LABEL":
        current.labels.update(_pairs(path, ins.line, ins.arguments, current.variables()))
    elif ins.keyword == "ENTRYPOINT":
        try:
            entrypoint = json.loads(ins.arguments)
        except json.JSONDecodeError:
            entrypoint = None
        if (
            not isinstance(entrypoint, list)
            or not entrypoint
            or not all(isinstance(a, str) for a in entrypoint)
        ):
            raise DockerfileError(
                path, ins.line, 'expected ENTRYPOINT ["executable", "arg", ...] (JSON form)'
            )
        current.entrypoint = tuple(entrypoint)


def _spec(path: Path, build: Stage, final_builder: _StageBuilder) -> ImageSpec:
    final = final_builder.stage(path)
    line = final_builder.line
    if final_builder.user is None:
        raise DockerfileError(path, line, "the final stage sets no USER")
    if final_builder.entrypoint is None:
        raise DockerfileError(path, line, "the final stage sets no ENTRYPOINT")
    if not final_builder.labels.get(LABEL_TITLE):
        raise DockerfileError(path, line, f"the final stage needs LABEL {LABEL_TITLE}=<image name>")
    outputs: list[str] = []
    for step in final.steps:
        if isinstance(step, Copy):
            if step.from_stage != build.name:
                raise DockerfileError(path, step.line, f"no stage named {step.from_stage!r}")
            outputs += [s for s in step.sources if s not in outputs]
    build_runs = [s.command for s in build.steps if isinstance(s, Run)]
    final_runs = [s.command for s in final.steps if isinstance(s, Run)]
    requirements = [m.group("path") for c in build_runs for m in _REQUIREMENT.finditer(c)]
    targets = [m for c in final_runs for m in _PIP_TARGET.finditer(c)]
    if len(requirements) != 1:
        raise DockerfileError(
            path, line, "the build stage must pip wheel exactly one --requirement=<lock file>"
        )
    if len(targets) != 1:
        raise DockerfileError(
            path, line, "the final stage must pip install exactly one '<project>[<extras>]'"
        )
    return ImageSpec(
        dockerfile=path,
        build=build,
        final=final,
        user=final_builder.user,
        labels=tuple(sorted(final_builder.labels.items())),
        entrypoint=final_builder.entrypoint,
        distribution=targets[0].group("distribution"),
        extras=tuple(targets[0].group("extras").split(",")),
        requirements=_repository_path(path, build, requirements[0]),
        outputs=tuple(outputs),
    )


def _repository_path(path: Path, build: Stage, relative: str) -> str:
    """The repository file that a build-stage COPY put at `relative` (to its WORKDIR)."""
    wanted = PurePosixPath(build.workdir, relative)
    for step in build.steps:
        if isinstance(step, Copy):
            for source in step.sources:
                if str(copy_target(step, source)) == str(wanted):
                    return source
    raise DockerfileError(path, 1, f"{relative!r} is not a file the build stage copies from the repository")
