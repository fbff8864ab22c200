"""`aicert verify --lineage DIR|oci://REGISTRY/REPO`: the chain of certified runs behind a model, back to its first run.

A run whose input held an earlier certified run's output records, for that input, the earlier
certificate's digest (sha256 of its exact bytes) and subject (`aicert.lineage`; in the statement,
so the quote binds it). From the certificate being verified, `walk_lineage` follows each recorded
parent to a certificate of that digest (a `Finder`: the lineage directories, registries), verifies it fully on its own
(every check, its own trust level), checks the link, and goes on from it:

- `lineage-complete`: a certificate with the recorded digest is found, in a directory or in a
  registry repository (`aicert.oci.lineage`); else the lineage is incomplete: a failure, unless
  partial lineage is accepted, and then the result says so;
- `lineage-digest`: the bytes read hash to that digest (a file changed since it was indexed, or a
  registry that serves other bytes);
- `lineage-parent`: the parent verifies (its failing check is named);
- `lineage-subject`: the parent certifies the model the child recorded for that input;
- `lineage-bounds`: no cycle, at most `MAX_LINEAGE_DEPTH` links from the certificate to a first
  run and `MAX_LINEAGE_RUNS` runs in all. Digests make a cycle impossible for honest hashes; it is
  refused all the same, never followed.

A certificate's lineage is a tree (a run may have several parents, at most `MAX_PARENTS`); a run
reached twice (two inputs from one base) is verified once and its link checked each time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aicert.boundedfile import FileRefused, read_regular_file
from aicert.certificate import ASSURANCE_ORDER, ParentRecord, VerifiedAssurance
from aicert.verify.errors import LineageCheck, MalformedError, VerificationError
from aicert.verify.jsonload import CERTIFICATE_MAX_BYTES
from aicert.verify.result import VerifiedTraining

MAX_LINEAGE_DEPTH: Final = 32  # links from the certificate given to its first run
MAX_LINEAGE_RUNS: Final = 256  # runs in a lineage, the certificate given included
MAX_DIRECTORY_ENTRIES: Final = 4096  # entries of one --lineage directory looked at

Found = tuple[bytes, str]  # a certificate's bytes and where they came from
Finder = Callable[[str], Found | None]
VerifyOne = Callable[[bytes], VerifiedTraining]


@dataclass(frozen=True)
class Link:
    """One run of the lineage, verified."""

    certificate: str  # sha256 of the certificate's bytes (for the one given: of the file given)
    depth: int  # 0 for the certificate given, 1 for its parents, …
    result: VerifiedTraining
    source: str  # the file it was read from
    child: str | None = None  # the certificate that recorded it as a parent
    input: str | None = None  # the child's input it is the output of

    def to_json(self) -> dict[str, Any]:
        statement = self.result.statement
        run = statement.predicate.run if statement else None
        return {
            "certificate": self.certificate,
            "depth": self.depth,
            "assurance": self.result.assurance,
            "model": statement.subject[0].digest.sha256 if statement else None,
            "run": {"name": run.name, "namespace": run.namespace, "uid": run.uid} if run else None,
            "source": self.source,
            "child": self.child,
            "input": self.input,
            "parents": [
                {"input": i.name, "certificate": i.parent.certificate, "model": i.parent.subject}
                for i in (statement.predicate.inputs if statement else [])
                if i.parent is not None
            ],
        }


@dataclass(frozen=True)
class Missing:
    """A parent a run recorded whose certificate is in no --lineage directory or repository."""

    child: str
    input: str
    parent: ParentRecord

    def describe(self) -> str:
        return (
            f"input {self.input} of certificate sha256:{self.child} is the output of the run certified by "
            f"sha256:{self.parent.certificate} (model sha256:{self.parent.subject}), which is in no --lineage directory or repository"
        )


@dataclass(frozen=True)
class Lineage:
    links: tuple[Link, ...]  # in the order they were reached, the certificate given first
    missing: tuple[Missing, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def weakest(self) -> VerifiedAssurance:
        """The lowest level of any run of the chain: what the whole lineage is worth."""
        return min((link.result.assurance for link in self.links), key=ASSURANCE_ORDER.__getitem__)

    @property
    def first_runs(self) -> tuple[Link, ...]:
        """The runs that record no parent (the chain's beginnings, when complete)."""
        return tuple(
            link
            for link in self.links
            if link.result.statement is None
            or all(i.parent is None for i in link.result.statement.predicate.inputs)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "weakest": self.weakest,
            "runs": [link.to_json() for link in self.links],
            "missing": [
                {
                    "child": m.child,
                    "input": m.input,
                    "certificate": m.parent.certificate,
                    "model": m.parent.subject,
                }
                for m in self.missing
            ],
        }


@dataclass
class _Walk:
    find: Finder
    verify: VerifyOne
    max_depth: int
    max_runs: int
    links: list[Link] = field(default_factory=list)
    verified: dict[str, VerifiedTraining] = field(default_factory=dict)
    missing: list[Missing] = field(default_factory=list)

    def visit(self, digest: str, result: VerifiedTraining, depth: int, path: tuple[str, ...]) -> None:
        statement = result.statement
        if statement is None:  # an old AICert proof records no inputs, so no parents
            return
        for item in statement.predicate.inputs:
            if item.parent is not None:
                self.follow(digest, item.name, item.parent, depth + 1, path)

    def follow(self, child: str, name: str, parent: ParentRecord, depth: int, path: tuple[str, ...]) -> None:
        wanted = parent.certificate
        if wanted in path:
            raise VerificationError(
                LineageCheck.LINEAGE_BOUNDS,
                f"input {name} of certificate sha256:{child} names sha256:{wanted}, which is already in "
                "its own lineage: a cycle",
            )
        if depth > self.max_depth:
            raise VerificationError(
                LineageCheck.LINEAGE_BOUNDS,
                f"the lineage is deeper than {self.max_depth} runs (at input {name} of sha256:{child})",
            )
        result = self.verified.get(wanted)
        if result is None:
            found = self.find(wanted)
            if found is None:
                self.missing.append(Missing(child, name, parent))
                return
            data, source = found
            actual = hashlib.sha256(data).hexdigest()
            if actual != wanted:
                raise VerificationError(
                    LineageCheck.LINEAGE_DIGEST,
                    f"{source} hashes to sha256:{actual}, not sha256:{wanted}, the certificate input {name} "
                    f"of sha256:{child} records (it changed after it was found)",
                )
            if len(self.verified) >= self.max_runs:
                raise VerificationError(
                    LineageCheck.LINEAGE_BOUNDS, f"the lineage holds more than {self.max_runs} runs"
                )
            result = self._verify_parent(data, source, name, child)
            self.verified[wanted] = result
            self._check_subject(result, parent, name, child, source)
            self.links.append(Link(wanted, depth, result, source, child, name))
            self.visit(wanted, result, depth, (*path, wanted))
        else:
            self._check_subject(result, parent, name, child, "the certificate")

    def _verify_parent(self, data: bytes, source: str, name: str, child: str) -> VerifiedTraining:
        where = f"the certificate of input {name} of sha256:{child} ({source})"
        try:
            result = self.verify(data)
        except VerificationError as exc:
            raise VerificationError(
                LineageCheck.LINEAGE_PARENT,
                f"{where} does not verify: check {exc.check} failed: {exc.reason}",
            ) from None
        except MalformedError as exc:
            raise VerificationError(LineageCheck.LINEAGE_PARENT, f"{where} is unusable: {exc}") from None
        if result.statement is None:
            raise VerificationError(
                LineageCheck.LINEAGE_PARENT, f"{where} is an old AICert proof, which certifies no model"
            )
        return result

    @staticmethod
    def _check_subject(
        result: VerifiedTraining, parent: ParentRecord, name: str, child: str, source: str
    ) -> None:
        assert result.statement is not None
        named = result.statement.subject[0].digest.sha256
        if named != parent.subject:
            raise VerificationError(
                LineageCheck.LINEAGE_SUBJECT,
                f"{source} certifies model sha256:{named}, but input {name} of sha256:{child} recorded the "
                f"output of model sha256:{parent.subject}",
            )


def walk_lineage(
    digest: str,
    result: VerifiedTraining,
    find: Finder,
    verify: VerifyOne,
    *,
    source: str = "the certificate given",
    partial: bool = False,
    max_depth: int = MAX_LINEAGE_DEPTH,
    max_runs: int = MAX_LINEAGE_RUNS,
) -> Lineage:
    """The lineage of the verified certificate `result` (sha256 `digest`). `find` gives the bytes of a
    certificate by its digest (None: not there); `verify` verifies one fully. Raises
    VerificationError naming a `LineageCheck`; a missing parent fails `lineage-complete` unless
    `partial`, and then the result lists it."""
    walk = _Walk(find, verify, max_depth, max_runs)
    walk.links.append(Link(digest, 0, result, source))
    walk.verified[digest] = result
    walk.visit(digest, result, 0, (digest,))
    if walk.missing and not partial:
        raise VerificationError(
            LineageCheck.LINEAGE_COMPLETE,
            "; ".join(m.describe() for m in walk.missing)
            + " (give its directory or repository with --lineage, or "
            "accept an incomplete lineage with --lineage-partial)",
        )
    return Lineage(tuple(walk.links), tuple(walk.missing))


@dataclass(frozen=True)
class CertificateDirectories:
    """The certificates in the --lineage directories, by sha256 of their bytes: the regular files at
    each directory's top level of at most 16 MiB (others are not certificates and are passed over);
    at most `MAX_DIRECTORY_ENTRIES` entries in each directory."""

    files: dict[str, Path]

    @classmethod
    def index(cls, directories: Sequence[Path]) -> CertificateDirectories:
        files: dict[str, Path] = {}
        for directory in directories:
            try:
                with os.scandir(directory) as entries:
                    names: list[str] = []
                    for entry in entries:
                        if len(names) == MAX_DIRECTORY_ENTRIES:
                            raise MalformedError(
                                "--lineage", f"{directory} holds more than {MAX_DIRECTORY_ENTRIES} entries"
                            )
                        if entry.is_file(follow_symlinks=False):
                            names.append(entry.name)
            except NotADirectoryError:
                raise MalformedError("--lineage", f"{directory} is not a directory") from None
            except OSError as exc:
                raise MalformedError("--lineage", f"cannot read {directory}: {exc.strerror}") from None
            for name in sorted(names):
                path = directory / name
                try:
                    data = read_regular_file(path, limit=CERTIFICATE_MAX_BYTES)
                except FileRefused:
                    continue  # too large, or gone: not a certificate of the chain
                files.setdefault(hashlib.sha256(data).hexdigest(), path)
        return cls(files)

    def find(self, digest: str) -> Found | None:
        path = self.files.get(digest)
        if path is None:
            return None
        try:
            return read_regular_file(path, limit=CERTIFICATE_MAX_BYTES), str(path)
        except FileRefused:
            return None
